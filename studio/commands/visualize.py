"""`studio visualize`: render every target of an objective config in one batch, save the PNGs, a grid
and the per-image metrics, and mirror them to W&B. Also the demo's visualization step.

Run layout (paths relative to the run dir, as the manifest gives them):
    images/<target>_s<seed>.png   one per (target, seed), native resolution (grey or RGB)
    grid.png                      all images, one row per target when seeds > 1, upscaled for viewing
    grid_step<k>.png              the images at each snapshot threshold
    history.csv                   objective per step (columns: step, then target@seed)
    exemplars/<target>_top.png    natural exemplars and the sanity checks (studio/commands/render_checks.py)
Nothing is written until every batch has rendered, so a failing run leaves no half set.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from studio import config
from studio.commands import channel_labels, render_checks
from studio.commands.shared import Result, generator_for, judge_for, realism_words, train_one
from studio.data import build_datamodule
from studio.errors import StudioError
from studio.files import write_text
from studio.images import grid, save_png, slug
from studio.judge import Judge
from studio.models import get_layer, layer_names, layer_shapes, untrained_copy
from studio.vit import check_map_layer
from studio.adapters import optvis as optvis_config
from studio.adapters.exemplars import cascade_layer, check_split_size, exemplar_settings
from studio.optvis.objectives import LOGITS
from studio.optvis.params import ParamSpec, pixel
from studio.optvis.regularizers import Regularization
from studio.optvis.render import RenderOptions, Rendering, concat, render


def check_targets(model, objective_cfg, spec: ParamSpec) -> list:
    """The objective's targets on this model: unknown layers, bad indices fail in one line."""
    layer = objective_cfg.get("layer")
    if layer and optvis_config.objective_kind(objective_cfg).reads_layer:
        get_layer(model, str(layer))  # raises "unknown layer 'x'; choose from: ..."
        check_map_layer(getattr(model, "net", model), str(layer), "objective.layer")  # a ViT's tokens: no map
    shapes = layer_shapes(model, (spec.channels, *spec.size), LOGITS, "param.channels, param.size")
    return optvis_config.objective_targets(objective_cfg, shapes)


def render_config(model, objective_cfg, spec: ParamSpec, regularization: Regularization, options: RenderOptions,
                  batch_size: int = 256) -> Rendering:
    """Render every target of `objective_cfg` × every seed, `batch_size` images at a time."""
    optvis_config.check_seeds(objective_cfg, len(options.seeds))
    targets = check_targets(model.to(options.device), objective_cfg, spec)
    per_batch = max(1, batch_size // len(options.seeds))
    chunks = [targets[i:i + per_batch] for i in range(0, len(targets), per_batch)]
    out = []
    for i, chunk in enumerate(chunks):
        label = (options.desc or "") + (f" [{i + 1}/{len(chunks)}]" if len(chunks) > 1 else "")
        objective = optvis_config.build_objective(objective_cfg, chunk)
        out.append(render(model, objective, spec, regularization.transforms, regularization.as_list(),
                          options.with_overrides(desc=label or None)))
    return concat(out)


@dataclass
class Saved:
    items: list
    artifacts: dict
    grid: Path


def _beside(rendering: Rendering, images, n_seeds: int, beside: dict):
    """(images, columns) of grid.png with one row per target: its seeds, then its exemplars from `beside`
    ({target: n×C×H×W}, resized to the render's size)."""
    size = images.shape[-2:]
    rows = []
    for start in range(0, len(rendering.targets), n_seeds):
        extra = beside[rendering.targets[start]]
        if extra.shape[-2:] != size:
            extra = F.interpolate(extra, size=tuple(size), mode="bilinear", align_corners=False)
        rows += [images[start:start + n_seeds], extra.to(images.dtype)]
    return torch.cat(rows), n_seeds + len(next(iter(beside.values())))


def save_rendering(rendering: Rendering, out_dir: Path, run_dir: Path, n_seeds: int,
                   extra: dict | None = None, beside: dict | None = None) -> Saved:
    """PNG per succeeded image, grid(s) and history under out_dir; manifest items with paths relative to run_dir.
    beside: {target: images} shown after each target's renders in grid.png (its natural exemplars)."""
    items = []
    for b in rendering.succeeded:
        path = out_dir / "images" / f"{slug(rendering.targets[b])}_s{rendering.seeds[b]}.png"
        save_png(rendering.images[b], path)
        items.append({"target": rendering.targets[b], "seed": rendering.seeds[b],
                      "image": str(path.relative_to(run_dir)), "metrics": rendering.metrics(b), **(extra or {})})
    columns = n_seeds if n_seeds > 1 else min(len(rendering.targets), 16)

    def shown(images):  # a failed target's tile is plain grey
        images = images.clone()
        for b in rendering.failed:
            images[b] = 0.5
        return images

    grid_path = out_dir / "grid.png"
    images = shown(rendering.images)
    if beside:
        images, columns = _beside(rendering, images, n_seeds, beside)
    save_png(grid(images, columns), grid_path)
    columns = n_seeds if n_seeds > 1 else min(len(rendering.targets), 16)
    artifacts = {"grid": str(grid_path.relative_to(run_dir))}
    for step, images in sorted(rendering.snapshots.items()):
        path = out_dir / f"grid_step{step}.png"
        save_png(grid(shown(images), columns), path)
        artifacts[f"grid_step{step}"] = str(path.relative_to(run_dir))
    history = rendering.history["objective"]
    header = ["step"] + [f"{t}@{s}" for t, s in zip(rendering.targets, rendering.seeds)]
    rows = [",".join(header)] + [",".join([str(i + 1)] + [f"{v:.6g}" for v in row.tolist()])
                                 for i, row in enumerate(history)]
    write_text(out_dir / "history.csv", "\n".join(rows) + "\n")
    artifacts["history"] = str((out_dir / "history.csv").relative_to(run_dir))
    return Saved(items, artifacts, grid_path)


def summary(rendering: Rendering) -> dict:
    """Run metrics of one rendering (over the images that did not fail)."""
    ok = rendering.succeeded
    metrics = {"images": len(ok), "failed": len(rendering.failed), "render_seconds": round(rendering.seconds, 3)}
    if ok:
        gain = rendering.activation_gain[ok]
        metrics.update(objective_mean=float(rendering.objective[ok].mean()), activation_gain_mean=float(gain.mean()),
                       activation_gain_min=float(gain.min()))
        if rendering.target_prob is not None:
            prob = rendering.target_prob[ok]
            metrics.update(target_prob_mean=float(prob.mean()), target_prob_min=float(prob.min()))
    if rendering.failed:
        metrics["failures"] = [f"{rendering.targets[b]} seed {rendering.seeds[b]}: {why}"
                               for b, why in sorted(rendering.failed.items())]
    return metrics


def report_failures(rendering: Rendering, command: str, hint: str = "") -> None:
    """A stopped target is one warning line each; if nothing rendered, one error line (plus `hint`: the
    settings that can blow the objective up)."""
    lines = summary(rendering).get("failures", [])
    if lines and not rendering.succeeded:
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise StudioError(f"every target failed: {lines[0]}{more}{'; ' + hint if hint else ''}")
    for line in lines:
        print(f"studio {command}: warning: stopped {line}; the other targets went on", file=sys.stderr)


def _overflow_hint(cfg) -> str:
    """What to lower when the objective turned non-finite: lr and the regularizer weights, with their values."""
    regularizer = optvis_config.regularizer_config(cfg)
    terms = OmegaConf.to_container(regularizer, resolve=True) if OmegaConf.is_config(regularizer) else {}
    weights = [f"regularizer.{k}.weight={t['weight']}" for k, t in terms.items()
               if isinstance(t, dict) and t.get("weight") is not None]
    return f"lower lr={cfg.lr}" + (f" or {', '.join(weights)}" if weights else "")


LABEL_FIELDS = ("dissect_label", "dissect_concept", "dissect_iou")  # studio/commands/channel_labels.py


def log_rendering(tracker, rendering: Rendering, saved: Saved, run_dir: Path, prefix: str) -> None:
    """Mirror to W&B: the objective curve, the grid and a table of every image with its metrics."""
    if tracker.run is None:
        return
    ok = rendering.succeeded
    history = rendering.history["objective"][:, ok]
    every = max(1, history.shape[0] // 64)
    for i in range(every - 1, history.shape[0], every):
        tracker.log({f"{prefix}/step": i + 1, f"{prefix}/objective_mean": float(history[i].mean()),
                     f"{prefix}/objective_min": float(history[i].min())})
    tracker.log_image(f"{prefix}/grid", saved.grid, f"{prefix}: {len(ok)} images")
    keys = list(saved.items[0]["metrics"]) if saved.items else []
    first = saved.items[0] if saved.items else {}
    pictures = ("image", *(f"exemplars_{k}" for k in first.get("exemplars") or {}))
    rows = [{"target": item["target"], "seed": item["seed"], "image": run_dir / item["image"],
             **{f"exemplars_{k}": run_dir / v for k, v in (item.get("exemplars") or {}).items()},
             **{k: item[k] for k in LABEL_FIELDS if k in item},
             **{k: item["metrics"].get(k) for k in keys}} for item in saved.items]
    tracker.log_table(f"{prefix}/images", rows, images=pictures)
    if "grid_dissect" in saved.artifacts:
        tracker.log_image(f"{prefix}/grid_dissect", run_dir / saved.artifacts["grid_dissect"],
                          f"{prefix}: each channel's Network Dissection label")


def _describe(objective_cfg, rendering: Rendering, n_seeds: int) -> str:
    targets = len(rendering.targets) // n_seeds
    return f"{optvis_config.describe(objective_cfg)}: {targets} target(s) x {n_seeds} seed(s)"


def _print_summary(label: str, metrics: dict, where: Path) -> None:
    parts = [f"{metrics['images']} image(s) in {metrics['render_seconds']:.1f} s"]
    if "activation_gain_min" in metrics:
        parts.append(f"activation gain min {metrics['activation_gain_min']:.3g}, "
                     f"mean {metrics['activation_gain_mean']:.3g}")
    if "target_prob_min" in metrics:
        parts.append(f"target probability min {metrics['target_prob_min']:.4f}")
    if "judge_recognition" in metrics:
        parts.append(f"judge recognizes {metrics['judge_recognition']:.0%}")
    if "realism_ratio" in metrics:
        parts.append(realism_words(metrics))
    if "diversity" in metrics:
        parts.append(f"diversity {metrics['diversity']:.2f} (real {metrics['diversity_real']:.2f})")
    if "path_similarity_mean" in metrics:
        parts.append(f"vs exemplars {metrics['render_vs_exemplars_mean']:.2f}, path similarity "
                     f"{metrics['path_similarity_mean']:.2f} (natural {metrics['path_similarity_natural_mean']:.2f})")
    if "randomized_similarity_mean" in metrics:
        parts.append(f"randomized similarity {metrics['randomized_similarity_mean']:.2f}")
    print(f"{label}: {'; '.join(parts)} -> {where}")


def judge_rendering(judge: Judge, rendering: Rendering) -> tuple[list[dict], dict]:
    """The judge's metrics of the succeeded images: per image (class targets: judge_correct, judge_prob)
    and for the set (judge_recognition, realism_ratio, diversity across seeds)."""
    ok = rendering.succeeded
    targets = [rendering.targets[b] for b in ok]
    classes = [int(t.split(":", 1)[1]) for t in targets] if all(t.startswith("class:") for t in targets) else None
    return judge.score(rendering.images[ok], classes, targets)


def run(cfg, tracker) -> Result:
    """Render every target of cfg.objective × seeds on the (trained, cached) model; PNGs + grid + metrics."""
    run_dir = tracker.output_dir
    options, batch_size = optvis_config.render_options(cfg)  # a bad device fails here, before any training
    options = options.with_overrides(desc=optvis_config.describe(cfg.objective))
    optvis_config.check_seeds(cfg.objective, len(options.seeds))
    latent = optvis_config.needs_generator(cfg.param)
    spec = pixel(cfg.data.size, cfg.data.channels) if latent else optvis_config.build_param(cfg.param)
    regularization = optvis_config.build_regularization(optvis_config.regularizer_config(cfg))
    if optvis_config.is_auto(cfg.get("regularizer")):
        print(_recipe_line(cfg, options))
    exemplars = exemplar_settings(cfg)
    channel_labels.check_settings(cfg)
    untrained = untrained_copy(cfg.model, cfg.data)
    if untrained is not None:  # a typo in a layer name or an index costs no training
        check_targets(untrained, cfg.objective, spec)
        if exemplars is not None and exemplars.randomized:
            cascade_layer(exemplars, None, layer_names(untrained), [])  # a bad randomize_to name

    dm = build_datamodule(cfg.data)
    check_split_size(exemplars, dm)
    if latent:  # before the classifier: a generator checkpoint that does not fit costs no training
        spec = optvis_config.build_param(cfg.param, generator_for(cfg, dm, tracker).module)
    trained = train_one(cfg, cfg.model, dm, tracker, "model")

    options = optvis_config.with_real_images(options, dm)
    rendering = render_config(trained.model, cfg.objective, spec, regularization, options, batch_size)
    report_failures(rendering, "visualize", _overflow_hint(cfg))
    seeds = len(options.seeds)
    checks = None
    if exemplars is not None:
        found = render_checks.search(trained.model, cfg.objective, check_targets(trained.model, cfg.objective, spec),
                                     dm, exemplars)
        again = lambda model: render_config(model, cfg.objective, spec, regularization,
                                            _randomized_options(options, desc="randomized model"), batch_size)
        checks = render_checks.measure(trained.model, found, rendering, exemplars, again, int(cfg.seed))
    saved = save_rendering(rendering, run_dir, run_dir, seeds,
                           beside=render_checks.beside(checks.search, exemplars) if checks else None)
    metrics = {**summary(rendering), "targets": len(rendering.targets) // seeds, "seeds": seeds,
               "model_test_acc": trained.test_acc}
    if checks:
        saved.artifacts.update(render_checks.save(checks, saved.items, rendering, run_dir, run_dir))
        metrics.update(checks.summary)
    if cfg.get("judge_metrics", True):
        judge = judge_for(cfg, dm, tracker)
        per_image, judged = judge_rendering(judge, rendering)
        for item, extra in zip(saved.items, per_image):
            item["metrics"].update(extra)
        metrics.update(judged)
    _label_channels(cfg, trained.model, dm, saved, metrics, run_dir)
    log_rendering(tracker, rendering, saved, run_dir, "visualize")
    _print_summary(_describe(cfg.objective, rendering, seeds), metrics, run_dir / "grid.png")
    return Result(metrics, saved.items, saved.artifacts)


def _label_channels(cfg, model, dm, saved: Saved, metrics: dict, run_dir: Path) -> None:
    """Each rendered channel's Network Dissection label (studio/commands/channel_labels.py) on its item, the
    captioned grid with the artifacts, the count with the metrics."""
    added, artifacts = channel_labels.label_rendering(cfg, model, dm, saved.items, run_dir, run_dir)
    metrics.update(added)
    saved.artifacts.update(artifacts)


# --- the demo's step ---------------------------------------------------------------------------
# (name, objective config, overrides, seeds): conv2's 12 filters (the source's stroke detectors) and
# the 10 classes, each class with 4 seeds so pixel and latent renders of the same classes compare.
DEMO_RENDERS = (("conv2", "channel", {"layer": "conv2", "channels": "all"}, 1),
                ("classes", "class", {"classes": "all"}, 4))
DEMO_REGULARIZERS = ("none", "l2_tv")
DEMO_LATENT = ("classes", "class", {"classes": "all"}, 4)
DEMO_RANDOMIZED = ("conv2",)  # the renders whose randomized_similarity the demo measures: the cheap ones (12 images)


def _recipe_line(cfg, options: RenderOptions) -> str:
    """What the parameterization's recipe (regularizer=auto) renders with, and the overrides that change it."""
    from_generator = OmegaConf.is_interpolation(cfg.param, "render")  # param=latent: ${generator.render}
    whose = f"generator {cfg.generator.name}" if from_generator else f"param {cfg.param.name}"
    bound = cfg.param.get("max_norm")  # param=latent: the generator's recipe may bound z (dcgan does)
    bounded, knobs = ("", "") if bound is None else (f", ||z|| <= {bound:.2f}", ", param.max_norm=")
    starts = cfg.param.get("start_candidates", 1)  # dcgan's recipe: 4; param=guided: 24
    if starts > 1:
        bounded, knobs = f"{bounded}, best of {starts} starts", f"{knobs}, param.start_candidates="
        if options.retry_below is not None:  # the GAN's recipe: a class render stuck below it starts again
            bounded, knobs = f"{bounded}, retried below p {options.retry_below:g}", f"{knobs}, retry_below="
        if options.natural_edge is not None:  # the GAN's recipe: every start rendered, the natural render shown
            bounded, knobs = f"{bounded}, natural choice at edge {options.natural_edge:g}", f"{knobs}, natural_edge="
    return (f"recipe of {whose}: regularizer {cfg.param.render.regularizer}, {options.steps} steps, "
            f"lr {options.lr:g}{bounded} (regularizer=, steps=, lr={knobs} change it)")


def _demo_options(seeds: int, param: dict, dm=None) -> RenderOptions:
    """`studio visualize`'s loop settings for `param` (its render recipe's steps, lr and retries; the natural
    choice where the data module `dm` gives the real images)."""
    recipe = param["render"]
    options = RenderOptions(steps=int(recipe["steps"]), lr=float(recipe["lr"]),
                            optimizer=str(recipe.get("optimizer", "adam")), seeds=tuple(range(seeds)),
                            device=optvis_config.resolve_device("auto"), progress=False,
                            retry_below=recipe.get("retry_below"),
                            natural_edge=recipe.get("natural_edge") if dm is not None else None)
    return optvis_config.with_real_images(options, dm)


def _param_config(name: str, cfg) -> dict:
    """conf/param/<name>.yaml resolved against cfg's data (and generator: param=latent's recipe is its)."""
    given = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "generator") if k in cfg}
    root = OmegaConf.create({**given, "param": config.load("param", name)})
    return OmegaConf.to_container(root, resolve=True)["param"]


def _demo_checks(settings, model, dm, searches: dict, objective_cfg, spec, regularization, options: RenderOptions,
                 rendering: Rendering, seed: int = 0):
    """The exemplars and checks of one demo render (None when conf/exemplars is off); `searches` keeps one
    exemplar search per objective config, shared by the recipes that render it."""
    if settings is None or dm is None:
        return None
    key = OmegaConf.to_yaml(objective_cfg)
    if key not in searches:
        searches[key] = render_checks.search(model, objective_cfg, check_targets(model, objective_cfg, spec), dm,
                                             settings)
    again = lambda other: render_config(other, objective_cfg, spec, regularization, _randomized_options(options))
    return render_checks.measure(model, searches[key], rendering, settings, again, seed)


def _randomized_options(options: RenderOptions, **overrides) -> RenderOptions:
    """The render's settings for its re-render on the cascade-randomized model, without retries or the natural
    choice: that model reaches no class, so retry_below would render the batch start_candidates times over, and
    its starts are its own picks anyway (the objective on random weights scores them)."""
    return options.with_overrides(retry_below=None, natural_edge=None, natural_images=None, **overrides)


def _save_demo_render(tracker, run_dir: Path, job: tuple, judge: Judge | None, settings) -> Result:
    """One demo render's PNGs, items, metrics (judge, exemplars and checks) and W&B mirror."""
    name, reg, param_name, seeds, rendering, checks = job
    out_dir = run_dir / "visualize" / name
    saved = save_rendering(rendering, out_dir, run_dir, seeds,
                           extra={"render": name, "regularizer": reg, "param": param_name},
                           beside=render_checks.beside(checks.search, settings) if checks else None)
    m = summary(rendering)
    if judge is not None:
        per_image, judged = judge_rendering(judge, rendering)
        for item, extra in zip(saved.items, per_image):
            item["metrics"].update(extra)
        m.update(judged)
    if checks is not None:
        saved.artifacts.update(render_checks.save(checks, saved.items, rendering, out_dir, run_dir))
        m.update(checks.summary)
    log_rendering(tracker, rendering, saved, run_dir, f"visualize/{name}")
    _print_summary(f"demo: {name.replace('_', ' with ', 1)}", m, saved.grid)
    return Result({f"visualize/{name}/{k}": v for k, v in m.items() if k != "failures"}, saved.items,
                  {f"visualize/{name}/{k}": v for k, v in saved.artifacts.items()})


def demo_visualizations(cfg, tracker, run_dir: Path, model, judge: Judge | None = None, generator=None, dm=None):
    """conv2's filters and the classes in pixel space, without regularization and with l2_tv; with a
    generator also the classes through its latent space (param=latent, the generator's recipe); scored by
    the judge if given; with the data module `dm`, natural exemplars and the sanity checks (conf/exemplars).

    Uses the same YAML files as `studio visualize` (conf/objective, conf/param, conf/regularizer)."""
    run_dir = Path(run_dir)
    load = config.load
    pixels = _param_config("pixel", cfg)
    jobs = []  # (what, name, regularizer, objective cfg, param config, seeds)
    names = layer_names(model)
    for what, objective_name, overrides, seeds in DEMO_RENDERS:
        if overrides.get("layer") and overrides["layer"] not in names:
            print(f"demo: {cfg.model.name} has no layer {overrides['layer']!r}; skipping its filter renders")
            continue
        objective_cfg = OmegaConf.merge(load("objective", objective_name), overrides)
        jobs += [(what, f"{what}_{reg}", reg, objective_cfg, pixels, seeds) for reg in DEMO_REGULARIZERS]
    if generator is not None:
        what, objective_name, overrides, seeds = DEMO_LATENT
        latent = _param_config("latent", cfg)
        jobs.append((what, f"{what}_latent", latent["render"]["regularizer"],
                     OmegaConf.merge(load("objective", objective_name), overrides), latent, seeds))

    settings = exemplar_settings(cfg)
    if dm is not None:
        check_split_size(settings, dm)
    done, searches = [], {}
    for what, name, reg, objective_cfg, param, seeds in jobs:
        regularization = optvis_config.build_regularization(load("regularizer", reg))
        spec = optvis_config.build_param(param, generator)
        options = _demo_options(seeds, param, dm)
        rendering = render_config(model, objective_cfg, spec, regularization, options)
        report_failures(rendering, "demo")
        cheap = settings and replace(settings, randomized=settings.randomized and what in DEMO_RANDOMIZED)
        checks = _demo_checks(cheap, model, dm, searches, objective_cfg, spec, regularization,
                              options.with_overrides(desc=None), rendering)
        done.append((name, reg, spec.name, seeds, rendering, checks))

    out = Result({}, [], {})
    for job in done:  # written only once every render is done
        result = _save_demo_render(tracker, run_dir, job, judge, settings)
        out.metrics.update(result.metrics)
        out.items += result.items
        out.artifacts.update(result.artifacts)
    return out
