"""The engine: parsed requests in, scored results out, with no Redis and no Celery. In-process callers (the CLI's
`classify`, evaluation, benchmarks) and the stream use it alike.

Owns: model directories (`models`), the one onnxruntime module (`onnx`), tokenising (`tokenization`), the NLI and
embedding classifiers (`nli`, `embedding`) and the deterministic fake (`fake`) behind one protocol
(`classifier`), score maths (`scoring`), run planning (`batching`), the shortlist stage (`shortlist`), the
result cache (`result_cache`), results as published (`results`), and `engine.Engine`, which ties them together.

May import: `schemas` and the worker's floor (settings, errors, constants, metrics). Never the stream, delivery,
ops or process layers, nor redis, celery, kombu or httpx.
"""
