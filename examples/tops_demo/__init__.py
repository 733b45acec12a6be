"""The real-image demo of tops-prune (the ``demo`` extra): encode, select, measure, draw.

Not part of the library: ``tops_core`` never imports it.
"""
