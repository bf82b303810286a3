"""The baselines of bench/serve_load.py, each run as its own process.

``python bench/naive_server.py MODEL_DIR PORT``: FastAPI + a transformers pipeline per request.
No batching, no ONNX, no Ray: what a first deployment usually looks like.

``python bench/naive_server.py ONNX_DIR PORT --onnx``: the floor of any Python HTTP server here:
FastAPI calling raynlp's ONNX predictor (the model Serve serves) per request, nothing else (no
Ray, no batching, no validation, no metrics); plus ``POST /empty``, an HTTP round trip that does
no work.
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
    api = FastAPI()
    if "--onnx" in sys.argv:
        from raynlp.serving.predictor import OnnxPredictor

        predictor = OnnxPredictor(model_dir, intra_op_threads=1)

        @api.post("/predict")
        def predict(item: Item) -> dict:
            return predictor.predict([{"text": item.text}])[0]

        @api.post("/empty")
        def empty(item: Item) -> dict:
            return {"label": "none"}
    else:
        classify = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)

        @api.post("/predict")
        def predict(item: Item) -> dict:  # sync: FastAPI runs it in its thread pool
            return classify(item.text, truncation=True)[0]

    @api.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    uvicorn.run(api, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
