# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2

.PHONY: demo test venv lint clean-demo

$(VENV)/.installed: envs/requirements.txt envs/requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r envs/requirements-test.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config/demo.yaml
	$(VENV)/bin/snakemake --configfile config/demo.yaml --report results/demo/report.html
	@echo
	@echo "Demo study done:"
	@echo "  Report:   results/demo/report.html (open in a browser; start with Summary)"
	@echo "  Table 1:  results/demo/table1.md  (.csv, .tex)"
	@echo "  Table 2:  results/demo/table2.md  (.csv, .tex): pointing game, rank accuracy, top-k, energy"
	@echo "  Paired:   results/demo/fig_pairwise_mu_w.png, fig_pairwise_pointing.png, fig_pointing_per_class.png"
	@echo "  Table 3:  results/demo/table3.md  (.csv, .tex): faithfulness (region perturbation, AOPC)"
	@echo "  Faithful: results/demo/fig_perturbation_curves.png, fig_faithfulness_vs_mu_w.png, fig_sanity.png"
	@echo "  Fig. 1:   results/demo/fig1_analyzers.png, fig1_flat_layers.png (.pdf)"
	@echo "  Fig. 3:   results/demo/fig3_mu_by_box_size.png (.pdf)"
	@echo "  Fig. 2:   results/demo/fig2_occlusion.png (.pdf)"
	@echo "  Model:    results/demo/model_card.json; provenance: results/demo/provenance.json"
	@echo "  ResNet:   results/demo_resnet/ (the same study on the demo ResNet with BatchNorm: tables, figures, card)"
	@echo "  Compare:  results/comparisons/demo_models.md (.csv, .tex, .png): which method, on which model;"
	@echo "            demo_models_fig3.png: Fig. 3 across the models; demo_models_pairs.csv: paired differences"
	@echo
	$(PY) -m lrp.pipeline.reference check config/reference/demo.json --results results

# Two workers, one per core of the CI machine; each test file stays on one worker (--dist loadfile), so the
# end-to-end workflow run shared by test_workflow.py's tests is made once. (Starting the longest files first,
# tried on 2026-12-04, changed nothing: the two workers already end within a few seconds of each other.)
TEST_WORKERS ?= 2

test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Lint gate (CI runs it before the tests): Python style and imports, Snakemake formatting, Snakemake's own lint.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules/
	$(VENV)/bin/snakemake --lint --configfile config/demo.yaml

clean-demo:
	rm -rf results/demo results/demo_resnet results/models/demo_vgg results/models/demo_resnet results/comparisons \
		results/logs results/benchmarks
