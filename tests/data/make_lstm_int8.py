"""Writes ``lstm_int8.onnx`` and ``lstm_int8.npz`` (run from this folder; needs torch, onnx
and onnxruntime): a 2-layer bidirectional ``nn.LSTM(3, 4)`` exported by
``torch.onnx.export`` and quantized by ``onnxruntime.quantization.quantize_dynamic``
(int8, per channel), so that its two LSTMs become ``com.microsoft`` ``DynamicQuantizeLSTM``
nodes; the ``.npz`` keeps the float weights it was made from (PyTorch's names).

The committed files let the tests read a real quantized model without onnxruntime.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

HERE = Path(__file__).parent


def main() -> None:
    torch.manual_seed(17)
    m = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2.0)
    np.savez(HERE / "lstm_int8.npz", **{k: v.numpy() for k, v in m.state_dict().items()})
    float_path = HERE / "lstm_float.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(5, 1, 3),), str(float_path), dynamo=False,
                          opset_version=17, input_names=["x"])
    quantize_dynamic(str(float_path), str(HERE / "lstm_int8.onnx"),
                     weight_type=QuantType.QInt8, per_channel=True)
    float_path.unlink()


if __name__ == "__main__":
    main()
