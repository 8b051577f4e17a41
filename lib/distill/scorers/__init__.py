"""Per-response quality scorers: plain Python with no Spark, so the score stage wraps them in UDFs and
tests call them directly. Structure and n-gram scorers need nothing else; the perplexity scorers load a
reference model (transformers or vLLM) once per Python worker. Each module carries a `VERSION` that is
stored with its scores."""
