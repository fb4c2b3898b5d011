"""The built-in study specs, shipped inside the package as ``melanoma_search.search_spaces``.

``python -m melanoma_search.run --study NAME`` looks for ``NAME.yaml`` in ``./search_spaces`` of the working folder
first, then here, so a user's own spec of the same name overrides a built-in one.
"""
