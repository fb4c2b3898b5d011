"""The built-in objectives, shipped inside the package as ``melanoma_search.objectives``.

A study's ``objective: NAME`` is looked up as ``./objectives/NAME.py`` in the working folder first, then here.
"""
