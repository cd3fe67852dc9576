"""Glue to XLB 0.3.1: the import shim for current Warp (``compat``), steppers and boundary mixes
for configurations (``support``), and users' own operators (``user``)."""
