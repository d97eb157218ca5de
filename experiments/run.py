"""Runs the paper's experiments: segment a dataset, score it, write the report.

  python experiments/run.py --method=gmm_kmeans                # the five sample images
  python experiments/run.py --method=all --cnn_max_iter=100    # every method and variant

The same as the `jaxseg-run` console script (`jaxseg.cli`); `--help` lists every flag.
"""

from jaxseg import cli

if __name__ == "__main__":
    cli.run()
