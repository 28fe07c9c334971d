"""What runs once before training, never inside a Trainer: the built-in phantom
(``cli.py phantom``), the public data sets' adapters (``cli.py adapt``), the preprocessing
cache's filler (``cli.py prepare``) and the whole-data-set check (``cli.py check-data``).

The runtime (`datamodules`, `lightning_modules`, `callbacks`, `metrics`) never imports this
package; these tools import the runtime's reader, cache and checks so that they see the data
as training does.
"""
