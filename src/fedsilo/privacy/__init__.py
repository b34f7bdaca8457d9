"""Privacy tools that sit between a silo's client and the wire: secure aggregation, differential privacy, accounting.

``fedsilo.privacy.secagg`` is secure aggregation; it needs ``cryptography`` (``pip install
"fedsilo[secagg]"``, also part of ``fedsilo[deploy]``). ``dp`` and ``accounting`` are DP-FedAvg and
the privacy accountant (``fedsilo[dp]``). This package imports nothing heavy by itself, so
``import fedsilo`` stays light.
"""
