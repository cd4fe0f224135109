"""The Beam teacher pass: corpus in a data lake -> teacher inference -> MDS parts + manifest.

Modules, in the order data flows: config (settings), sources (reading the lake, work units),
packing (tokenize + pack), teacher (RunInference model handler), sink (parts, root index,
manifest), job (launcher checks + the graph), cli (`pdistill logits`), runner_options (Beam
options per runner). Imports `schemas`, never `trainer`.
"""
