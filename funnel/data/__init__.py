"""Data files shipped with the funnel (a package so that setuptools ships them as package data)."""
