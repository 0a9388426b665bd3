import json
import shutil
from pathlib import Path

import pytest

from mnistlab.cli import main
from mnistlab.errors import MnistlabError
from mnistlab.runs.compare import (
    HEADERS,
    TARGET_COLUMN,
    format_table,
    legend_lines,
    summarize_run,
    trained_on,
)
from mnistlab.runs.rundir import Run, find_runs, read_run

RUNS = Path(__file__).parent / "fixtures" / "runs"


def fake_run(test_accs: list[float], planned: int | None = None, finished: bool = True) -> Run:
    metrics = [
        {
            "epoch": i,
            "train_loss": 0.1,
            "train_acc": 98.0 + i / 10,
            "test_loss": 0.05,
            "test_acc": acc,
            "seconds": 2.0 * i,
        }
        for i, acc in enumerate(test_accs, 1)
    ]
    info = {
        "params": 1000,
        "macs": 2_000_000,
        "rf": 20,
        "epochs_planned": planned or len(test_accs),
        "finished": finished,
    }
    return Run(name="fake", path=Path("fake"), config={}, info=info, metrics=metrics)


def copy_run(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(RUNS / name, tmp_path / name))


def test_a_folder_expands_to_its_runs_sorted_and_each_run_is_listed_once():
    assert [p.name for p in find_runs([RUNS])] == ["01-seed", "02-wide-partial", "03-final"]
    found = find_runs([RUNS / "03-final", RUNS])
    assert [p.name for p in found] == ["03-final", "01-seed", "02-wide-partial"]


def test_load_run_reads_config_info_and_metrics():
    run = read_run(RUNS / "03-final")
    assert run.name == "03-final"
    assert run.config["target"].startswith("Under 8k parameters")
    assert run.info["params"] == 7896
    assert [r["epoch"] for r in run.metrics] == [1, 2, 3, 4, 5]


def test_summary_of_the_seed_run():
    row = summarize_run(read_run(RUNS / "01-seed"))
    # metrics.jsonl: test 97.95, 98.62, 98.87, 99.05; train correct 55510..59700 of 60000.
    assert row["name"] == "01-seed"
    assert (row["params"], row["macs"], row["rf"]) == (258602, 91979904, 42)
    assert (row["epochs"], row["epochs_planned"]) == (4, 4)
    assert row["best_test_acc"] == 99.05 and row["best_test_epoch"] == 4
    assert row["last_test_acc"] == 99.05
    assert row["last3_test_acc"] == pytest.approx((98.62 + 98.87 + 99.05) / 3, abs=1e-4)
    assert row["best_train_acc"] == pytest.approx(100 * 59700 / 60000)
    assert row["train_test_gap"] == pytest.approx(99.5 - 99.05, abs=1e-4)
    assert row["first_epoch_target"] is None
    assert row["seconds_per_epoch"] == pytest.approx(
        (48.213 + 47.905 + 48.377 + 48.102) / 4, abs=1e-4
    )
    assert row["finished"] is True


def test_summary_of_the_final_run():
    row = summarize_run(read_run(RUNS / "03-final"))
    # test 98.2, 98.8, 99.4, 99.6, 99.2: best at epoch 4, 99.4 first reached (exactly) at 3.
    assert row["best_test_acc"] == 99.6 and row["best_test_epoch"] == 4
    assert row["last_test_acc"] == 99.2
    assert row["last3_test_acc"] == pytest.approx((99.4 + 99.6 + 99.2) / 3, abs=1e-4)
    assert row["best_train_acc"] == pytest.approx(100 * 54423 / 55000)
    assert row["train_test_gap"] == pytest.approx(100 * 54423 / 55000 - 99.6, abs=1e-4)
    assert row["first_epoch_target"] == 3
    assert row["finished"] is True


def test_summary_of_the_unfinished_run():
    row = summarize_run(read_run(RUNS / "02-wide-partial"))
    assert (row["epochs"], row["epochs_planned"], row["finished"]) == (3, 15, False)
    # Three epochs so far: last-3 is the mean of all of them.
    assert row["last3_test_acc"] == pytest.approx((98.10 + 98.95 + 99.41) / 3, abs=1e-4)
    assert row["first_epoch_target"] == 3


@pytest.mark.parametrize(
    "accs, first",
    [
        ([98.0, 99.39, 99.40, 99.1], 3),
        ([99.5, 99.0], 1),
        ([99.0, 99.399, 99.3999], None),
    ],
)
def test_first_epoch_at_or_above_99_4(accs, first):
    assert summarize_run(fake_run(accs))["first_epoch_target"] == first


def test_ties_for_best_test_accuracy_report_the_earliest_epoch():
    row = summarize_run(fake_run([99.1, 99.3, 99.3, 99.2]))
    assert (row["best_test_acc"], row["best_test_epoch"]) == (99.3, 2)


def test_finished_needs_all_planned_epochs_and_the_flag():
    assert summarize_run(fake_run([99.0, 99.1]))["finished"] is True
    assert summarize_run(fake_run([99.0, 99.1], planned=5))["finished"] is False
    assert summarize_run(fake_run([99.0, 99.1], finished=False))["finished"] is False


def test_markdown_table_has_a_header_a_rule_and_one_row_per_run():
    rows = [summarize_run(read_run(p)) for p in find_runs([RUNS])]
    lines = format_table(rows, "markdown").splitlines()
    table = lines[: 2 + len(rows)]
    assert all(line.startswith("| ") and line.endswith(" |") for line in table)
    assert [line.count(" | ") for line in table] == [len(HEADERS) - 1] * len(table)
    assert table[1] == "| --- | " + " | ".join(["---:"] * (len(HEADERS) - 1)) + " |"
    # MNIST runs only: the target column's heading and legend name MNIST's 99.4.
    assert table[0].strip("| ").split(" | ")[HEADERS.index(TARGET_COLUMN)] == "first ≥99.4"
    seed = table[2].strip("| ").split(" | ")
    assert dict(zip(HEADERS, seed, strict=True)) == {
        "run": "01-seed",
        "params": "258,602",
        "MACs": "91.98M",
        "RF": "42",
        "epochs": "4/4",
        "best test": "99.05",
        "at epoch": "4",
        "last test": "99.05",
        "last-3 test": "98.85",
        "last-3 val": "—",
        "best train": "99.50",
        "gap": "+0.45",
        TARGET_COLUMN: "—",
        "s/epoch": "48.1",
        "train s": "193",
        "trained on": "cpu, 2 threads",
        "finished": "yes",
    }
    assert lines[2 + len(rows) :] == ["", *legend_lines(rows)]
    assert "first ≥99.4 = first epoch with test accuracy ≥ 99.4%." in lines


def test_text_table_columns_line_up():
    rows = [summarize_run(read_run(p)) for p in find_runs([RUNS])]
    lines = format_table(rows, "text", legend=False).splitlines()
    assert len(lines) == 1 + len(rows)
    assert len({len(line) for line in lines}) == 1
    # Right-aligned numbers: every "best test" value ends where its header ends.
    end = lines[0].index("best test") + len("best test")
    assert [line[end - 5 : end] for line in lines[1:]] == ["99.05", "99.41", "99.60"]


def test_json_rows_round_trip():
    rows = [summarize_run(read_run(p)) for p in find_runs([RUNS])]
    assert json.loads(format_table(rows, "json")) == rows


def test_unknown_format_is_an_error():
    with pytest.raises(MnistlabError, match="unknown table format"):
        format_table([], "html")


def test_cli_writes_the_table_to_out(tmp_path, capsys):
    out = tmp_path / "table.md"
    assert main(["compare", str(RUNS), "--format", "markdown", "--out", str(out)]) == 0
    rows = [summarize_run(read_run(p)) for p in find_runs([RUNS])]
    assert out.read_text() == format_table(rows, "markdown") + "\n"
    assert "wrote" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]  # no temporary file left


def test_cli_prints_text_by_default(capsys):
    assert main(["compare", str(RUNS / "03-final")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("run ")
    assert "03-final" in out and "99.60" in out


def test_a_folder_without_runs_is_an_error(tmp_path, capsys):
    (tmp_path / "empty-subfolder").mkdir()
    assert main(["compare", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "no run.json" in err and "holds none" in err


def test_a_missing_path_is_an_error(tmp_path):
    with pytest.raises(MnistlabError, match="no such directory"):
        find_runs([tmp_path / "nope"])


def test_empty_metrics_is_an_error_naming_the_run(tmp_path):
    run_dir = copy_run("01-seed", tmp_path)
    (run_dir / "metrics.jsonl").write_text("")
    with pytest.raises(MnistlabError, match="no epochs yet") as e:
        read_run(run_dir)
    assert str(run_dir) in str(e.value)


def test_a_record_without_its_timing_is_an_error(tmp_path):
    run_dir = copy_run("01-seed", tmp_path)
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.2, "train_acc": 93.0}\n')
    with pytest.raises(MnistlabError, match="metrics.jsonl:1: epoch record lacks seconds"):
        read_run(run_dir)


def test_run_json_without_params_is_an_error(tmp_path):
    run_dir = copy_run("01-seed", tmp_path)
    (run_dir / "run.json").write_text('{"name": "01-seed", "epochs_planned": 4}\n')
    with pytest.raises(MnistlabError, match="missing params, macs, rf"):
        read_run(run_dir)


def test_last_3_validation_mean_when_the_run_held_images_out():
    run = read_run(RUNS / "03-final")
    val = [r["val_acc"] for r in run.metrics[-3:]]
    assert summarize_run(run)["last3_val_acc"] == pytest.approx(sum(val) / 3)


def test_trained_on_names_device_threads_and_compilation():
    assert trained_on({"device": "cpu", "threads": 1}) == "cpu, 1 thread"
    assert (
        trained_on({"device": "cpu", "threads": 2, "compile": True}) == "cpu, 2 threads, compiled"
    )
    assert trained_on({"device": "cuda", "threads": 16, "compile": False}) == "cuda"
    assert trained_on({}) == "?"


def test_columns_narrow_the_table_and_its_legend(capsys):
    columns = "params,last-3 test,train s"
    assert main(["compare", str(RUNS), "--format", "markdown", "--columns", columns]) == 0
    table, legend = capsys.readouterr().out.split("\n\n")
    lines = table.splitlines()
    assert lines[0] == "| run | params | last-3 test | train s |"
    assert lines[1] == "| --- | ---: | ---: | ---: |"
    assert lines[2].startswith("| 01-seed | ") and lines[2].count("|") == 5
    assert "last-3 test = " in legend and "train s = " in legend
    assert "gap = " not in legend and "trained on = " not in legend


def test_an_unknown_column_is_one_line(capsys):
    assert main(["compare", str(RUNS), "--columns", "params,speed"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error: --columns: unknown column 'speed'")
    assert err.count("\n") == 1 and "last-3 test" in err
