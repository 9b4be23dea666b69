"""Marker only: lets this data folder install as the package ``qnas_hw._calibration`` (see pyproject.toml).

Without it an editable install cannot import the folder (setuptools' editable finder maps only regular packages),
and ``importlib.resources`` could not find the shipped JSON files.  Data only otherwise: no code belongs here.
"""
