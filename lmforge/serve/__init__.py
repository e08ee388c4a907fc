"""`lmforge serve`: OpenAI's HTTP API over a trained model (app.py), on FastAPI and uvicorn (the `serve` extra)."""
