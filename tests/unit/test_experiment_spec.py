"""Experiment specifications: checked and resolved without a database; the demo and the paper are two files."""

import json

import pytest

from neural_reg.experiment import load_spec, resolve
from neural_reg.paper import paper_spec
from pipeline.errors import ConfigError
from schemas.paramset import params_hash


def test_the_demo_specification_resolves_to_its_experiment():
    plan = resolve(load_spec("demo"))
    assert set(plan.targets) == {"Neural", "Shuffle", "Pixel", "Neural (data)", "Deflated", "Contrast", "Truth",
                                 "Robust net"}
    assert [(r["label"], r["alpha"]) for r in plan.regularisers] == [("None", 0.0)] + [
        (label, 10.0) for label in ("Neural", "Shuffle", "Pixel", "Deflated", "Contrast", "Truth", "Robust net")]
    # a regulariser points at its target configuration's hash; shuffle and deflated embed their base
    neural = plan.targets["Neural"][1]
    assert plan.targets["Shuffle"][1]["base"] == neural and plan.targets["Deflated"][1]["base"] == neural
    assert neural["predictor_hash"] == params_hash(plan.predictor[1])
    by_label = {r["label"]: r["resolved"] for r in plan.regularisers}
    assert by_label["Neural"]["target_hash"] == params_hash(neural) and by_label["None"]["target_hash"] is None
    assert sorted(plan.attacks) == ["demo-L2-ddn", "demo-Linf-fmn"]
    assert all(a["n_samples"] == 200 for a in plan.attacks.values())  # issue 11: at least 200 attacked samples
    assert len(load_spec("demo")["classifiers"]["seeds"]) >= 4
    assert "preset" not in plan.train[1] and plan.train[1]["epochs"] == 8 and plan.train[1]["adversarial"] is None
    # the positive control: the same schedule, PGD adversarial training
    name, control = plan.adversarial_train
    assert name == "demo-cpu-pgd" and control["adversarial"]["norm"] == "Linf"
    assert {k: v for k, v in control.items() if k != "adversarial"} == {
        k: v for k, v in plan.train[1].items() if k != "adversarial"}
    assert plan.targets["Robust net"][1]["train"]["adversarial"]["eps"] == 0.1


def test_the_paper_specification_takes_the_command_line_options():
    spec = paper_spec("mice8", seeds=3, alphas=(1.0, 20.0, 80.0), vgg_weights="/w/vgg19.pth")
    plan = resolve(spec)
    assert spec["classifiers"]["seeds"] == [0, 1, 2]
    labels = [(r["label"], r["alpha"]) for r in plan.regularisers]
    assert ("None", 0.0) in labels and ("VGG", 80.0) in labels and len(labels) == 1 + 7 * 3
    # by default the recipe sweeps alpha widely enough for either reading of the paper's alpha = 20
    default = resolve(paper_spec("mice8"))
    assert sorted({r["alpha"] for r in default.regularisers} - {0.0}) == [1.0, 5.0, 20.0, 80.0]
    assert default.adversarial_train[1]["adversarial"]["eps"] == 0.031
    assert all(t[1].get("scan_group", "mice8") == "mice8" for t in plan.targets.values())
    assert plan.targets["VGG"][1]["weights_path"] == "/w/vgg19.pth"


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(targts={}), "targts"),
    (lambda s: s["classifiers"].update(seed=[0]), "seed"),
    (lambda s: s["classifiers"].update(seeds=[]), "seeds"),
    (lambda s: s["classifiers"].update(regularise_towards=["Neural", "VGG"]), "VGG"),
    (lambda s: s["classifiers"]["train"].update(lr_step_epoch=3), "lr_step_epoch"),
    (lambda s: s["targets"]["Shuffle"].update(base="Pixels"), "Pixels"),
    (lambda s: s["robustness"]["attacks"].update(preset="fast", only=["L2-nope"]), "L2-nope"),
    (lambda s: s["classifiers"]["adversarial_control"]["adversarial"].update(stepz=3), "stepz"),
    (lambda s: s["classifiers"]["adversarial_control"].pop("name"), "name"),
    (lambda s: s["targets"]["Deflated"].update(base="Neurall"), "Neurall"),
    (lambda s: s["robustness"].update(attack={}), "attack"),
    (lambda s: s["scans"].update(animals=["1"]), "not both"),
])
def test_a_bad_specification_names_the_field(change, message):
    spec = load_spec("demo")
    change(spec)
    with pytest.raises(ConfigError, match=message):
        resolve(spec)


def test_a_specification_file_that_is_not_json_names_file_and_line(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text('{"name": "x",\n "scan_group": }')
    with pytest.raises(ConfigError, match=r"mine.json: not valid JSON \(line 2"):
        load_spec(path)
    with pytest.raises(ConfigError, match="no such experiment"):
        load_spec(tmp_path / "missing.json")
    path.write_text(json.dumps({"name": "x", "scan_group": "g", "targets": {"P": {"kind": "pixel"}}}))
    assert set(resolve(load_spec(path)).targets) == {"P"}


def test_the_command_line_prints_a_project_error_without_a_traceback(tmp_path, capsys):
    from neural_reg.cli import main

    assert main(["experiment", "check", "demo"]) == 0
    assert ("valid; 8 targets, 8 regularisers, an adversarially trained positive control, 2 attacks"
            in capsys.readouterr().out)
    bad = tmp_path / "bad.json"
    spec = load_spec("demo")
    spec["classifiers"]["train"]["epoch"] = 3
    bad.write_text(json.dumps(spec))
    assert main(["experiment", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neural-reg: error: ") and "epoch" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="epoch"):
        main(["--debug", "experiment", "check", str(bad)])
