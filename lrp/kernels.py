"""The rules' elementwise steps (stabilised ratios R / z), in two implementations that agree to round-off.

Why two: besides the convolutions, an LRP backward pass spends its time on activation-sized elementwise work
(bias add, zero test, divide, scale), and each PyTorch op reads and writes a whole activation. On an H100
that is about 10 % of an LRP_CMP:α1 call (benchmarks/README.md). `EAGER` runs PyTorch ops, in place where it
can. `FUSED` compiles each step with `torch.compile` (Triton on CUDA, C++ on CPU) into one kernel that reads
its inputs once and writes its output once; `attribute_many(..., fused=True)` selects it, and it is the
default for CUDA inputs (`resolve`). The first call of each step on a device compiles it (seconds to a
minute; cached on disk by PyTorch). tests/engine/test_kernels.py
checks that both give the same numbers: bit for bit on CPU; on CUDA, Triton divides to within 2 ulp and
flushes subnormal denominators to zero (which then count as zero).

Conventions (lrp.rules): exact zeros in denominators become SAFE_EPS (iNNvestigate's safe_divide);
ε-stabilisation adds ε·sign(z) with sign(0) = +1. A bias `b` of None means "no bias term".
"""

from __future__ import annotations

import warnings

import torch

SAFE_EPS = 1e-7


class Eager:
    """PyTorch ops. The reference implementation, and the default except on CUDA (`resolve`)."""

    name = "eager"

    def ratio(self, R, z, b, scale: float) -> torch.Tensor:
        """scale · R / safe(z + b), in a new tensor (z is not modified: it is often a cached forward quantity)."""
        d = z.clone() if b is None else z + b
        return _ratio_into(R, d, scale)

    def ratio_pair(self, R, zp, zn, bp, bn, alpha: float, beta: float) -> torch.Tensor:
        """[α·R / safe(zp + bp), −β·R / safe(zn + bn)] stacked on the channel axis: (N, 2C, ...).

        Why stacked: the transposed convolution with the stacked weight [w⁺; w⁻] then gives
        T(w⁺, s⁺) − T(w⁻, s⁻) in one call (one larger GEMM, no separate subtraction)."""
        s, sp, sn = _halves(R)
        _ratio_into(R, _add(zp, bp, sp), alpha)
        _ratio_into(R, _add(zn, bn, sn), -beta)
        return s

    def ratio_pair_from_z(self, R, z, zp, b, bp, bn, alpha: float, beta: float) -> torch.Tensor:
        """`ratio_pair` for a non-negative input, with z⁻ = min(z − b − z⁺, 0) from the recorded output z."""
        s, sp, sn = _halves(R)
        _ratio_into(R, _add(zp, bp, sp), alpha)
        zn = (sn.copy_(z) if b is None else torch.sub(z, b, out=sn)).sub_(zp).clamp_(max=0)
        _ratio_into(R, zn if bn is None else zn.add_(bn), -beta)
        return s

    def eps_ratio(self, R, z, epsilon: float) -> torch.Tensor:
        """R / (z + ε·sign(z)); for ε = 0, R / safe(z) (LRP-z)."""
        return _f_eps_ratio(R, z, epsilon)  # already one new tensor per op, nothing to do in place


def safe(d: torch.Tensor) -> torch.Tensor:
    """d with exact zeros replaced by SAFE_EPS: the denominator every rule without ε uses."""
    return torch.where(d == 0, SAFE_EPS, d)


def _ratio_into(R, d, scale: float) -> torch.Tensor:
    """scale · R / d with exact zeros of d replaced, computed in the memory of the temporary `d`.

    In place because fresh activation-sized tensors are what dominates the rules' cost besides the
    convolutions (allocation, page faults on CPU)."""
    d = d.masked_fill_(d == 0, SAFE_EPS)
    s = torch.div(R, d, out=d)
    return s if scale == 1 else s.mul_(scale)


def _halves(R):
    c = R.shape[1]
    s = R.new_empty((R.shape[0], 2 * c) + tuple(R.shape[2:]))
    return s, s[:, :c], s[:, c:]


def _add(a, b, out):
    return out.copy_(a) if b is None else torch.add(a, b, out=out)


# ---------------------------------------------------------------------------------------------------
# The same steps as pure functions, for torch.compile (one kernel each; same operation order as Eager)


def _f_ratio(R, z, b, scale: float):
    s = R / safe(z if b is None else z + b)
    return s if scale == 1 else s * scale


def _f_ratio_pair(R, zp, zn, bp, bn, alpha: float, beta: float):
    return torch.cat([_f_ratio(R, zp, bp, alpha), _f_ratio(R, zn, bn, -beta)], 1)


def _f_ratio_pair_from_z(R, z, zp, b, bp, bn, alpha: float, beta: float):
    zn = (z if b is None else z - b) - zp
    return _f_ratio_pair(R, zp, zn.clamp(max=0), bp, bn, alpha, beta)


def _f_eps_ratio(R, z, epsilon: float):
    if not epsilon:
        return R / safe(z)
    return R / (z + epsilon * (2.0 * (z >= 0).to(z.dtype) - 1.0))


class FusedKernelError(RuntimeError):
    """torch.compile could not build or run a fused step on this machine (e.g. no C++ compiler, no Triton)."""


class Fused:
    """Each step compiled once per process into one kernel, with symbolic shapes. A new device, dtype, rank,
    ε, bias mode, a batch of 1, or sizes that coincided at the first compile (PyTorch's duck sizing) compile
    a variant (seconds); other new image sizes and batch sizes reuse one."""

    name = "fused"
    RECOMPILE_LIMIT = 64
    """Variants per step that torch.compile may build (its default, 8, is reached by a test session that mixes
    devices, dtypes, ranks, batches of 1 and bias modes). Beyond it, a step runs eagerly, with a warning."""

    def __init__(self):
        self._compiled: dict = {}
        self._warned = False

    def ratio(self, R, z, b, scale: float) -> torch.Tensor:
        return self._run(_f_ratio, EAGER.ratio, R, z, b, scale)

    def ratio_pair(self, R, zp, zn, bp, bn, alpha: float, beta: float) -> torch.Tensor:
        return self._run(_f_ratio_pair, EAGER.ratio_pair, R, zp, zn, bp, bn, alpha, beta)

    def ratio_pair_from_z(self, R, z, zp, b, bp, bn, alpha: float, beta: float) -> torch.Tensor:
        return self._run(_f_ratio_pair_from_z, EAGER.ratio_pair_from_z, R, z, zp, b, bp, bn, alpha, beta)

    def eps_ratio(self, R, z, epsilon: float) -> torch.Tensor:
        return self._run(_f_eps_ratio, EAGER.eps_ratio, R, z, epsilon)

    def _run(self, fn, eager, *args):
        from torch._dynamo.exc import FailOnRecompileLimitHit

        compiled = self._compiled.get(fn)
        if compiled is None:
            compiled = self._compiled[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
        try:
            with torch._dynamo.config.patch(recompile_limit=self.RECOMPILE_LIMIT):
                return compiled(*args)
        except FailOnRecompileLimitHit:
            if not self._warned:
                self._warned = True
                warnings.warn(f"lrp.kernels: {fn.__name__[3:]} reached {self.RECOMPILE_LIMIT} compiled variants in "
                              f"this process; it and any other step past the limit run eagerly (same maps)")
            return eager(*args)
        except Exception as e:
            eager(*args)  # the inputs' own problem (shapes, memory) raises here, with PyTorch's message
            raise FusedKernelError(
                f"the fused LRP kernels could not compile or run {fn.__name__[3:]} on {args[0].device} "
                f"({type(e).__name__}: {_first_line(e)}); use the eager kernels: attribute_many(..., fused=False), "
                f"or attribution.fused: false in the config") from e


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


EAGER = Eager()
FUSED = Fused()


def resolve(fused: bool | str | None, device: torch.device | str) -> bool:
    """`fused=None` or "auto" (the default; config `attribution.fused: auto`): fused on CUDA, eager elsewhere.

    On an H100 the fused steps are what bring LRP_CMP:α1 under 1.6× and LRP_CMP:α2 under 2.2× a gradient pass
    (benchmarks/README.md), and a GPU job runs long enough to repay the compilation. On CPU they gain less
    (the suite 7.85× → 7.23× on 2 cores) than the 10–20 s each new process spends compiling, and they need a
    C++ compiler: opt in with fused=True.
    """
    if fused is None or fused == "auto":
        return torch.device(device).type == "cuda"
    if not isinstance(fused, bool):
        raise TypeError(f"fused must be True, False, or None / 'auto' (fused on CUDA), got {fused!r}")
    return fused


def select(fused: bool):
    """The implementation for `attribute_many(..., fused=...)` (after `resolve`)."""
    return FUSED if fused else EAGER
