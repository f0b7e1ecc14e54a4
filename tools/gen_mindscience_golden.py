"""Golden values for the MindScience transformer port, from MindScience itself.

Needs the reference stack only (never the tests): ``pip install --no-deps mindflow-ascend==0.3.0 easydict``.
Run from the repository root: ``python tools/gen_mindscience_golden.py``. Writes into
``tests/golden/mindscience/``:

- ``<name>.ckpt``: ``ms.save_checkpoint`` of a ``mindflow.cell`` model whose parameters are all
  randomised (MindScience zero-initialises ``output_proj``, which would make every output 0);
- ``<name>.npz``: the inputs (``x``, ``timestep``, ``condition``) and MindScience's output ``out``;
- ``configs.json``: each model's class and constructor arguments;
- ``loss.npz`` + ``loss.json``: ``DiffusionTrainer.get_loss`` for every objective (pred_noise /
  pred_x0 / pred_v), loss type (l1 / l2) and P2 weighting (gamma, k), on two DDPM schedules, with
  the fixed inputs, the noised model input and the model output it saw;
- ``loss_grad.npz`` + ``loss_grad.json``: the loss and its gradient with respect to every parameter
  (``ms.value_and_grad`` of ``get_loss``, as a MindScience training script takes it) for a few
  (objective, loss type, P2) cases with (B, 1) timesteps, MindScience's docstring convention: a
  training step ports when both match.

CPU workarounds:

- ``import mindflow`` imports matplotlib (``mindflow.cfd.visualization``); it is stubbed here, as
  nothing used needs it.
- MindScience's ``DDIMScheduler.step`` uses 1-D ``Tensor.repeat``, which has no CPU kernel; it
  would need patching to ``ops.tile``. Not needed here: only ``DDPMScheduler`` tables and
  ``DiffusionTrainer.get_loss`` are used.

Found in MindScience 0.3.0 while doing this (checked by this script, see ``check_known_issues``):

- ``AttentionBlock`` adds the block input to both residuals (``x = ffn(ffn_norm(x)) + h`` with ``h``
  the block input), so the attention output reaches the stream only through the feed-forward branch.
  Reproduced by the port, for checkpoint parity.
- With ``compute_dtype=float16`` the models output NaN: ``MultiHeadAttention._mask_scores`` always adds
  ``zeros * Tensor(-1e10, float16)`` = 0 · (−inf). The port has no mask term and is finite in float16.
- ``rescale_betas_zero_snr=True`` raises ``AttributeError`` (``numpy.ndarray.sqrt``).
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import mindspore as ms
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "golden" / "mindscience"

CONFIGS = {
    "dt_token": ("DiffusionTransformer",
                 dict(in_channels=4, out_channels=4, hidden_channels=32, layers=2, heads=4, time_token_cond=True)),
    "dt_add_odd": ("DiffusionTransformer",
                   dict(in_channels=3, out_channels=5, hidden_channels=15, layers=1, heads=3, time_token_cond=False)),
    "cdt_tokens": ("ConditionDiffusionTransformer",
                   dict(in_channels=4, out_channels=4, cond_channels=6, hidden_channels=24, layers=2, heads=4,
                        time_token_cond=True, cond_as_token=True)),
    "cdt_mixed": ("ConditionDiffusionTransformer",
                  dict(in_channels=2, out_channels=3, cond_channels=3, hidden_channels=16, layers=3, heads=2,
                       time_token_cond=False, cond_as_token=True)),
    "cdt_added": ("ConditionDiffusionTransformer",
                  dict(in_channels=2, out_channels=2, cond_channels=5, hidden_channels=16, layers=1, heads=1,
                       time_token_cond=True, cond_as_token=False)),
}
BATCH, SEQ_LEN = 3, 10

#: (name, DDPMScheduler options, model config used for the loss)
LOSS_SCHEDULES = [
    ("cosine1000", dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"), "cdt_tokens"),
    ("linear100", dict(num_train_timesteps=100, beta_start=0.0001, beta_end=0.02, beta_schedule="linear"),
     "dt_token"),
]
OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")
LOSS_TYPES = ("l1", "l2")
P2 = ((0.0, 1.0), (1.0, 1.0), (0.5, 2.0))


def import_mindflow_cell():
    for name in ("matplotlib", "matplotlib.pyplot"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
    import mindflow.cell as cell

    return cell


def randomise(net, rng):
    for param in net.get_parameters():
        value = rng.normal(0.0, 0.3, param.shape)
        if param.name.endswith("gamma"):
            value += 1.0
        param.set_data(ms.Tensor(value.astype(np.float32)))


def inputs(cfg, rng, t_max=1000):
    x = rng.standard_normal((BATCH, SEQ_LEN, cfg["in_channels"])).astype(np.float32)
    t = np.array([0, 37, t_max - 1], np.int32)
    cond = rng.standard_normal((BATCH, cfg["cond_channels"])).astype(np.float32) if "cond_channels" in cfg else None
    return x, t, cond


def call(net, x, t, cond):
    args = (ms.Tensor(x), ms.Tensor(t))
    if cond is not None:
        args += (ms.Tensor(cond),)
    return net(*args).asnumpy()


def check_known_issues(cell, nets):
    name, (cls, cfg) = "dt_token", CONFIGS["dt_token"]
    half = getattr(cell, cls)(**cfg, compute_dtype=ms.float16)
    ms.load_param_into_net(half, {p.name: p for p in nets[name].get_parameters()})
    x, t, cond = inputs(cfg, np.random.default_rng(1))
    out = call(half, x, t, cond)
    print(f"float16 {cls}: NaN in output: {bool(np.isnan(out).any())}")
    try:
        cell.DDPMScheduler(rescale_betas_zero_snr=True)
        print("rescale_betas_zero_snr=True: works")
    except AttributeError as err:
        print(f"rescale_betas_zero_snr=True: AttributeError: {err}")


#: (name, schedule, objective, loss type, gamma, k) of the gradient golden values
GRAD_CASES = [
    ("v_l2_p2", "cosine1000", "pred_v", "l2", 1.0, 1.0),
    ("noise_l1", "cosine1000", "pred_noise", "l1", 0.0, 1.0),
    ("x0_l2_p2", "linear100", "pred_x0", "l2", 0.5, 2.0),
]


def gradient_golden(cell, nets):
    """``ms.value_and_grad`` of MindScience's ``get_loss`` over the model's parameters, per case."""
    arrays, cases = {}, {}
    schedules = {name: (options, model) for name, options, model in LOSS_SCHEDULES}
    for case, sname, objective, loss_type, gamma, k in GRAD_CASES:
        options, model_name = schedules[sname]
        net, cfg = nets[model_name], CONFIGS[model_name][1]
        scheduler = cell.DDPMScheduler(**options, compute_dtype=ms.float32)
        rng = np.random.default_rng(11)
        x0, _, cond = inputs(cfg, rng)
        noise = rng.standard_normal(x0.shape).astype(np.float32)
        t = rng.integers(0, options["num_train_timesteps"], (BATCH, 1)).astype(np.int32)
        trainer = cell.DiffusionTrainer(net, scheduler, objective=objective, p2_loss_weight_gamma=gamma,
                                        p2_loss_weight_k=k, loss_type=loss_type)
        args = (ms.Tensor(x0), ms.Tensor(noise), ms.Tensor(t)) + (() if cond is None else (ms.Tensor(cond),))
        params = net.trainable_params()
        loss, grads = ms.value_and_grad(trainer.get_loss, None, params)(*args)
        arrays.update({f"{case}/x0": x0, f"{case}/noise": noise, f"{case}/timestep": t})
        if cond is not None:
            arrays[f"{case}/condition"] = cond
        arrays.update({f"{case}/grad/{p.name}": g.asnumpy() for p, g in zip(params, grads)})
        cases[case] = {"schedule": sname, "scheduler": options, "model": model_name, "objective": objective,
                       "loss_type": loss_type, "p2_loss_weight_gamma": gamma, "p2_loss_weight_k": k,
                       "loss": float(loss.asnumpy())}
    np.savez(OUT / "loss_grad.npz", **arrays)
    (OUT / "loss_grad.json").write_text(json.dumps(cases, indent=2, sort_keys=True) + "\n")


def main():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    cell = import_mindflow_cell()
    OUT.mkdir(parents=True, exist_ok=True)
    nets = {}
    for i, (name, (cls, cfg)) in enumerate(CONFIGS.items()):
        rng = np.random.default_rng(100 + i)
        net = getattr(cell, cls)(**cfg, compute_dtype=ms.float32)
        net.set_train(False)
        randomise(net, rng)
        nets[name] = net
        ms.save_checkpoint(net, str(OUT / f"{name}.ckpt"))
        x, t, cond = inputs(cfg, rng)
        data = dict(x=x, timestep=t, out=call(net, x, t, cond))
        if cond is not None:
            data["condition"] = cond
        np.savez(OUT / f"{name}.npz", **data)
    (OUT / "configs.json").write_text(
        json.dumps({name: {"class": cls, "config": cfg} for name, (cls, cfg) in CONFIGS.items()}, indent=2) + "\n")

    loss_arrays, loss_values = {}, {}
    for sname, options, model_name in LOSS_SCHEDULES:
        scheduler = cell.DDPMScheduler(**options, compute_dtype=ms.float32)
        cfg = CONFIGS[model_name][1]
        rng = np.random.default_rng(7)
        x0, t, cond = inputs(cfg, rng, t_max=options["num_train_timesteps"])
        t = np.array([1, options["num_train_timesteps"] // 2, options["num_train_timesteps"] - 1], np.int32)
        noise = rng.standard_normal(x0.shape).astype(np.float32)
        seen = {}

        def recording(*args, net=nets[model_name], seen=seen):
            out = net(*args)
            seen["model_input"], seen["model_output"] = args[0].asnumpy(), out.asnumpy()
            return out

        loss_arrays.update({f"{sname}/x0": x0, f"{sname}/noise": noise, f"{sname}/timestep": t,
                            f"{sname}/alphas_cumprod": scheduler.alphas_cumprod.asnumpy()})
        if cond is not None:
            loss_arrays[f"{sname}/condition"] = cond
        values = {}
        for objective in OBJECTIVES:
            for loss_type in LOSS_TYPES:
                for gamma, k in P2:
                    trainer = cell.DiffusionTrainer(recording, scheduler, objective=objective,
                                                    p2_loss_weight_gamma=gamma, p2_loss_weight_k=k,
                                                    loss_type=loss_type)
                    loss = trainer.get_loss(ms.Tensor(x0), ms.Tensor(noise), ms.Tensor(t),
                                            None if cond is None else ms.Tensor(cond))
                    values[f"{objective}/{loss_type}/{gamma}/{k}"] = float(loss.asnumpy())
        loss_arrays[f"{sname}/model_input"] = seen["model_input"]
        loss_arrays[f"{sname}/model_output"] = seen["model_output"]
        loss_values[sname] = {"scheduler": options, "model": model_name, "losses": values}
    np.savez(OUT / "loss.npz", **loss_arrays)
    (OUT / "loss.json").write_text(json.dumps(loss_values, indent=2, sort_keys=True) + "\n")
    gradient_golden(cell, nets)
    check_known_issues(cell, nets)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
