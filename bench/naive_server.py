"""The naive baseline of bench/serve_load.py: FastAPI + a transformers pipeline per request.

No batching, no ONNX, no Ray: what a first deployment usually looks like. Run as its own process:
``python bench/naive_server.py MODEL_DIR PORT``.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class Item(BaseModel):
    text: str


def main() -> None:
    model_dir, port = sys.argv[1], int(sys.argv[2])
    classify = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)
    api = FastAPI()

    @api.post("/predict")
    def predict(item: Item) -> dict:  # sync: FastAPI runs it in its thread pool
        return classify(item.text, truncation=True)[0]

    @api.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    uvicorn.run(api, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
