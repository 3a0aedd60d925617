"""The Switchboard contract: client frames, envelopes between services, names, codes and settings.

Nothing here does network I/O, and nothing here imports a service. Services in any language can
publish to Switchboard's exchanges by following what this package (and its JSON Schemas) describes.
"""
