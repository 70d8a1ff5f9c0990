"""One package per paper, named as its notebook, its params.yaml sections, its stages and its metrics file.
`experiment` holds its checkpoint stages (`python -m forgetlab.papers.<paper>.experiment <step> ...`; notebook
01b's ViT stages are `papers.selective_pruning.vision`) and the experiment the notebook runs; `analysis` (or
`claims`) what the notebook reads back from the recorded results. A paper imports the shared layers (core, methods,
data), never another paper."""
