"""Runs the conformance scenarios through PyTorch Lightning and writes what happened as JSON.

    python lightning_driver.py scenarios.json out.json workdir

Each scenario (tests/conformance/scenarios.json) describes a Trainer configuration, a data size
and scripted metric sequences; the LightningModule logs those values, so what the Trainer, its
callbacks and its logger do depends only on the loop's semantics, not on training floats.
test_conformance.cpp runs the same scenarios through frugal and compares the two records.
Exit code 3 (and a message on stderr) when Lightning cannot be imported.
"""

import json
import math
import os
import shutil
import sys
import warnings

try:
    import torch
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger
except Exception as e:  # noqa: BLE001 - any import failure means "no oracle here"
    print(f"lightning_driver: cannot import pytorch_lightning: {e!r}", file=sys.stderr)
    sys.exit(3)


def number(v):
    """JSON numbers, or the strings "nan", "inf", "-inf"."""
    if isinstance(v, str):
        return float(v)
    return v


def to_json_number(v):
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def scripted(seq, index):
    return number(seq[min(index, len(seq) - 1)])


class ScriptedModule(pl.LightningModule):
    def __init__(self, spec):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 1)
        self.spec = spec
        self.val_runs = 0
        if spec.get("hparams"):
            self.save_hyperparameters(spec["hparams"])

    def training_step(self, batch, batch_idx):
        x, _ = batch
        loss = self.net(x).pow(2).mean()
        self.last_raw_loss = loss.detach()
        if batch_idx == 0:
            for name, seq in self.spec.get("train_metrics", {}).items():
                self.log(name, scripted(seq, self.current_epoch), on_step=False, on_epoch=True)
        if self.spec.get("step_metric"):
            # on_step and on_epoch: "m_step" every step, "m_epoch" the epoch mean.
            value = float(self.current_epoch * 100 + batch_idx)
            self.log("m", value, on_step=True, on_epoch=True)
            self.log("s", value / 4.0)
            # reduce_fx="sum": the plain sum of the logged values (not weighted by batch size).
            self.log("n", value, on_step=False, on_epoch=True, reduce_fx="sum")
        return loss

    def validation_step(self, batch, batch_idx):
        if self.trainer.sanity_checking or batch_idx != 0:
            return
        index = self.val_runs
        self.val_runs += 1
        for name, seq in self.spec.get("val_metrics", {}).items():
            self.log(name, scripted(seq, index), on_step=False, on_epoch=True)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.spec.get("lr", 0.1))
        sch = self.spec.get("scheduler")
        if not sch:
            return opt
        kind = sch["type"]
        S = torch.optim.lr_scheduler
        if kind == "StepLR":
            s = S.StepLR(opt, sch["step_size"], gamma=sch.get("gamma", 0.1))
        elif kind == "MultiStepLR":
            s = S.MultiStepLR(opt, sch["milestones"], gamma=sch.get("gamma", 0.1))
        elif kind == "CosineAnnealingLR":
            s = S.CosineAnnealingLR(opt, sch["t_max"], eta_min=sch.get("eta_min", 0.0))
        elif kind == "LinearWarmupLR":
            s = S.LinearLR(opt, start_factor=sch["start_factor"], end_factor=sch.get("end_factor", 1.0),
                           total_iters=sch["total_iters"])
        elif kind == "OneCycleLR":
            s = S.OneCycleLR(opt, max_lr=sch["max_lr"], total_steps=sch["total_steps"],
                             pct_start=sch.get("pct_start", 0.3), div_factor=sch.get("div_factor", 25.0),
                             final_div_factor=sch.get("final_div_factor", 1e4), cycle_momentum=False)
        elif kind == "ReduceLROnPlateau":
            s = S.ReduceLROnPlateau(opt, mode=sch.get("mode", "min"), factor=sch.get("factor", 0.1),
                                    patience=sch.get("patience", 10), threshold=sch.get("threshold", 1e-4),
                                    cooldown=sch.get("cooldown", 0), min_lr=sch.get("min_lr", 0.0))
        else:
            raise ValueError(f"unknown scheduler {kind}")
        config = {"scheduler": s, "interval": sch.get("interval", "epoch"),
                  "frequency": sch.get("frequency", 1)}
        if sch.get("monitor"):
            config["monitor"] = sch["monitor"]
        return {"optimizer": opt, "lr_scheduler": config}


class Recorder(pl.Callback):
    def __init__(self):
        self.hooks = {k: 0 for k in ["train_epoch_start", "train_epoch_end", "train_batch_start",
                                     "val_runs", "val_batches", "sanity_val_batches",
                                     "optimizer_steps", "backward"]}
        self.epoch_end_steps = []
        self.val_points = []
        self.lrs = []
        self.backward_scale = []

    def on_train_epoch_start(self, trainer, module):
        self.hooks["train_epoch_start"] += 1

    def on_train_epoch_end(self, trainer, module):
        self.hooks["train_epoch_end"] += 1
        self.epoch_end_steps.append(trainer.global_step)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.hooks["train_batch_start"] += 1

    def on_validation_start(self, trainer, module):
        if not trainer.sanity_checking:
            self.hooks["val_runs"] += 1

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking:
            self.val_points.append([trainer.current_epoch, trainer.global_step])

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self.hooks["sanity_val_batches" if trainer.sanity_checking else "val_batches"] += 1

    def on_before_backward(self, trainer, module, loss):
        self.hooks["backward"] += 1
        # What backward runs on, over the step's loss: 1/k inside accumulation windows.
        self.backward_scale.append(round(float(loss.detach() / module.last_raw_loss), 6))

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.hooks["optimizer_steps"] += 1
        self.lrs.append(optimizer.param_groups[0]["lr"])




def loader(n, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.zeros(n, dtype=torch.long)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size,
                                       shuffle=False)


def rel_files(root):
    out = []
    if not os.path.isdir(root):
        return out
    for d, _, files in os.walk(root):
        for f in files:
            out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


def read_csv(path):
    import csv
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    return header, [dict(zip(header, r)) for r in body]


def read_yaml_keys(path):
    import yaml
    if not os.path.exists(path):
        return None
    with open(path) as f:
        content = yaml.safe_load(f) or {}
    return {k: str(v) for k, v in content.items()}


def trainer_kwargs(spec):
    kw = dict(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
              logger=False, enable_checkpointing=False)
    kw.update(spec.get("trainer", {}))
    return kw


def run_once(spec, root, attempt):
    rec = Recorder()
    callbacks = [rec]
    es = mc = None
    if "early_stopping" in spec:
        es_spec = dict(spec["early_stopping"])
        for k in ("stopping_threshold", "divergence_threshold"):
            if k in es_spec:
                es_spec[k] = number(es_spec[k])
        es = EarlyStopping(**es_spec)
        callbacks.append(es)
    if "checkpoint" in spec:
        mc = ModelCheckpoint(dirpath=os.path.join(root, "ckpt"), **spec["checkpoint"])
        callbacks.append(mc)
    kw = trainer_kwargs(spec)
    if "checkpoint" in spec:
        kw["enable_checkpointing"] = True
    if spec.get("logger"):
        kw["logger"] = CSVLogger(save_dir=root, name="logs")
    trainer = pl.Trainer(callbacks=callbacks, default_root_dir=root, **kw)
    module = ScriptedModule(spec)
    train = loader(spec["train_samples"], spec["batch_size"], 1)
    val = loader(spec["val_samples"], spec.get("val_batch_size", spec["batch_size"]), 2) \
        if spec.get("val_samples", 0) > 0 else None
    trainer.fit(module, train, val)
    out = {
        "final": {"epoch": trainer.current_epoch, "global_step": trainer.global_step},
        "hooks": rec.hooks,
        "epoch_end_steps": rec.epoch_end_steps,
        "val_points": rec.val_points,
    }
    if spec.get("scheduler"):
        out["lrs"] = rec.lrs
    if spec.get("trainer", {}).get("accumulate_grad_batches", 1) > 1:
        out["backward_scale"] = rec.backward_scale
    if es is not None:
        stopped = es.stopping_reason.name != "NOT_STOPPED"
        out["early_stopping"] = {
            "stopped": stopped,
            "stopped_epoch": es.stopped_epoch if stopped else None,
            "reason": es.stopping_reason.name,
            "wait_count": es.wait_count,
            "best_score": to_json_number(es.best_score),
        }
    if mc is not None:
        d = os.path.join(root, "ckpt")
        rel = lambda p: os.path.relpath(p, d) if p else ""  # noqa: E731
        out["checkpoint"] = {
            "files": rel_files(d),
            "best": rel(mc.best_model_path),
            "best_score": to_json_number(mc.best_model_score) if mc.best_model_path else None,
            "last": rel(mc.last_model_path),
        }
    return out


def run(spec, root):
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    out = run_once(spec, root, 0)
    if spec.get("logger"):
        # A second fit in the same root: the logger takes the next version_N.
        run_once(spec, root, 1)
        logs = os.path.join(root, "logs")
        header, rows = read_csv(os.path.join(logs, "version_0", "metrics.csv"))
        out["logger"] = {
            "versions": sorted(os.listdir(logs)),
            "columns": sorted(header),
            "rows": rows,
            "hparams": read_yaml_keys(os.path.join(logs, "version_0", "hparams.yaml")),
        }
    return out


def main():
    scenarios = json.load(open(sys.argv[1]))["scenarios"]
    out_path, work = sys.argv[2], sys.argv[3]
    only = set(sys.argv[4:])
    warnings.filterwarnings("ignore")
    results = {"lightning_version": pl.__version__, "torch_version": torch.__version__,
               "scenarios": {}}
    for spec in scenarios:
        if only and spec["name"] not in only:
            continue
        try:
            results["scenarios"][spec["name"]] = run(spec, os.path.join(work, spec["name"]))
        except Exception as e:  # noqa: BLE001 - recorded, the C++ side reports it
            results["scenarios"][spec["name"]] = {"error": f"{type(e).__name__}: {e}"}
    with open(out_path + ".tmp", "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    os.replace(out_path + ".tmp", out_path)


if __name__ == "__main__":
    main()
