"""The identity gallery: collections, subjects and their face templates; SQL first, index derived."""
