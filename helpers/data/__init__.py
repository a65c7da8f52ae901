"""Datasets: discrete factor grids, procedural renderers, bundled real images and real-file loaders.

Modules: ``factors`` (grids and pair sampling), ``dsprites`` (dSprites and its colour and noisy variants),
``shapes3d`` (a Shapes3D look-alike), ``realistic`` (textured sprites over photos), ``images`` (pictures
and digits bundled with installed packages) and ``loaders`` (the official dSprites and 3dshapes files).
"""
