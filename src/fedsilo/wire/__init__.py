"""The contract both wings share: what crosses between the server and a silo, and nothing else.

Arrays and their safetensors bytes (``arrays``), the difference of two models and its inverse
(``deltas``), the frozen messages (``messages``), the typed instructions a silo is sent
(``instructions``) and the codecs an update may travel in (``codecs``). The server wing and the
silo wing both import this package and never each other.
"""
