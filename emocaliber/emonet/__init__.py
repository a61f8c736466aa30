"""EmoNet-Face (LAION, arXiv 2505.20033): the 40-emotion taxonomy, loaders for the release's ``hq.csv`` and
``binary.csv``, the release's agreement metrics, an evaluation entry point and verification training items.

Modules: :mod:`.taxonomy` (names, groups, descriptors, label maps), :mod:`.data` (streamed loaders),
:mod:`.metrics` (kappa, Spearman, Mann-Whitney, Krippendorff's alpha, calibration), :mod:`.readouts` (prompts
and parsing of the model's answers), :mod:`.evaluate` (the entry point), :mod:`.corpus` (Binary -> training
records). See docs/emonet_face.md.
"""
