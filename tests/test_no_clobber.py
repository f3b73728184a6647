"""Nothing overwrites what another step made: PTP beside a teacher run, an export into a run
folder, a teacher-output dump over another teacher's file."""
import shutil

from helpers import expect_error, load_script, train_args, tree_digest


def test_ptp_in_the_teacher_folder_leaves_every_teacher_file_alone(tiny, mrpc_teacher, tmp_path):
    run = shutil.copytree(mrpc_teacher.run, tmp_path / "run-1")
    # a model with a tokenizer_config.json, which the teacher's folder does not have
    bert = shutil.copytree(tiny.bert, tmp_path / "bert")
    (bert / "tokenizer_config.json").write_text('{"do_lower_case": true}\n')
    before = tree_digest(run)
    load_script("PTP").main(train_args("MRPC", tiny.data, bert, run, "--student_hidden_layers", 2,
                                       "--teacher_prediction", mrpc_teacher.file))
    after = tree_digest(run)
    assert {name: after[name] for name in before} == before
    added = set(after) - set(before)
    assert added and all(name.startswith("PTP.") for name in added), sorted(added)
    assert {"PTP.vocab.txt", "PTP.tokenizer_config.json", "PTP.config.json"} <= added


def test_export_never_writes_into_a_run_folder(mrpc_teacher, tmp_path, capsys):
    export = load_script("export_hf").main
    run = shutil.copytree(mrpc_teacher.run, tmp_path / "run")
    for extra in ([], ["--overwrite_export_dir"]):
        expect_error(export, ["--run_dir", run, "--export_dir", run, *extra], capsys,
                     ["--export_dir", "BERT.cls_acc.pkl", "must not write over"],
                     watched=(tmp_path,))


def test_teacher_outputs_never_replace_another_teachers_file(mrpc_teacher, tiny, tmp_path, capsys):
    save = load_script("save_teacher_outputs").main
    out = tmp_path / "out"
    out.mkdir()

    def argv(teacher):
        return ["--task", "MRPC", "--data_dir", tiny.data, "--teacher_dir", teacher,
                "--output_dir", out, "--no_cuda"]

    first = save([str(a) for a in argv(mrpc_teacher.run)])
    assert save([str(a) for a in argv(mrpc_teacher.run)]) == first  # the same teacher again
    other = shutil.copytree(mrpc_teacher.run, tmp_path / "other-teacher")
    expect_error(save, argv(other), capsys, [first.name, "another teacher", "--output_dir"],
                 watched=(tmp_path,))
