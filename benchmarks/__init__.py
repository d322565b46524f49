"""Speed of ssdlib against the reference implementations it is checked against.

``python -m benchmarks.run`` (``make bench``) times every row this machine can run and writes
``benchmarks/results/latest.md`` and ``latest.json``. See ``benchmarks/run.py`` for the options.

timing  interleaved, synchronised timers and a description of the machine
inputs  the synthetic batches every row shares (ground truth, raw network outputs)
rows    what is timed: ssdlib's hot paths next to torchvision's / pycocotools' on the same inputs
run     the command line and the report
"""
