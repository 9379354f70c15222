"""`studio demo`, the main job: classifier, judge and generator on the bundled digits, then what they show:
filters and classes rendered (pixels and latent), probes and embeddings of the layers, local
explanations (with the Clever Hans experiment), TCAV of the Clever Hans model and Network Dissection of conv2
(whose labels go beside the conv2 renders). Each step is the
matching command's own code, run with
that command's shipped settings (conf/<command>.yaml) and conf/demo.yaml's few changes."""

from __future__ import annotations

from studio.commands import channel_labels, dissect, embed, explain, probe, tcav, visualize
from studio.commands.shared import Result, generator_for, judge_for, train_one
from studio.commands.train import accuracy_metrics
from studio.data import build_datamodule


def run(cfg, tracker) -> Result:
    run_dir = tracker.output_dir
    dm = build_datamodule(cfg.data)
    model = train_one(cfg, cfg.model, dm, tracker, "model")
    judge = train_one(cfg, cfg.judge, dm, tracker, "judge")
    metrics = {**accuracy_metrics(model, "model/"), **accuracy_metrics(judge, "judge/")}
    tracker.log({k: v for k, v in metrics.items() if k.endswith("_acc")})
    generator = generator_for(cfg, dm, tracker, samples_dir=run_dir / "generator")
    dissected, unit_rows = dissect.demo_step(cfg, tracker, run_dir / "dissect")
    steps = [visualize.demo_visualizations(cfg, tracker, run_dir, model.model, judge_for(cfg, dm, tracker, judge),
                                           generator.module, dm),
             probe.demo_step(cfg, tracker, run_dir / "probe"),
             embed.demo_step(cfg, tracker, run_dir / "embed"),
             explain.demo_explanations(cfg, tracker, run_dir, model.model),
             tcav.demo_step(cfg, tracker, run_dir / "tcav"), dissected]
    artifacts = {"model_checkpoint": str(model.path.resolve()), "judge_checkpoint": str(judge.path.resolve()),
                 "generator": str(generator.path.resolve())}
    for step in steps:
        metrics.update(step.metrics)
        artifacts.update(step.artifacts)
    items = [item for step in steps for item in step.items]
    artifacts.update(channel_labels.label_demo(items, unit_rows, run_dir, tracker))
    return Result(metrics, items, artifacts)
