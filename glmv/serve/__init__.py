"""The OpenAI-compatible HTTP server and web chat page (`glmv serve`).

    from glmv.serve.app import create_app, ServerConfig
    app = create_app(LLM(path, limits=MediaLimits.untrusted()), ServerConfig(api_key="..."))

FastAPI and uvicorn come with the `serve` extra; nothing here is imported by `import glmv`.
"""
