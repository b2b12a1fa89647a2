"""The demo's analogue of ImageNet weights: backbones pretrained on a neutral synthetic task.

- :mod:`.shapes`: the pretraining images (shape scenes) and their three image-level labels;
- :mod:`.spec`: the pretrain config of an architecture and the pins in params.yaml (no torch import,
  so the Snakefile and the config validator can use it);
- :mod:`.weights`: writing, verifying (data stage) and loading (training) the weights files;
- :mod:`.train`: the ``pretrain`` stage itself.

docs/pretrained.md explains the design.
"""
