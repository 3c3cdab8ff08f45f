#!/usr/bin/env bash
# Stand-in for `sbatch --parsable ...` in CI: start the job script in the background, as a batch system would,
# and print a job id at once. Snakemake's cluster-generic executor appends the job script path as the last
# argument, and learns that the job ended from the marker files the job script writes.
set -u
jobscript="${!#}"
nohup bash "$jobscript" >/dev/null 2>&1 &
echo "fake-$!"
