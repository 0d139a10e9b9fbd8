"""Checkers give the right verdict and a specific hint without the answer; nbgrader's student copies are current."""
import nbformat
import pytest
import torch

from lora_leak_lib import exercises
from lora_leak_lib.course import student_copies


@pytest.fixture
def lora_case():
    torch.manual_seed(0)
    r, alpha = 4, 16
    return dict(A=torch.randn(r, 8), B=torch.randn(6, r), G=torch.randn(6, 8), alpha=alpha, r=r)


def test_dL_dB_right_and_wrong(lora_case):
    A, G, s = lora_case["A"], lora_case["G"], lora_case["alpha"] / lora_case["r"]
    args = dict(A=A, G=G, alpha=lora_case["alpha"], r=lora_case["r"])
    assert exercises.check_lora_gradient_B(s * G @ A.T, **args).ok
    wrong = exercises.check_lora_gradient_B(G @ A.T, **args)
    assert not wrong.ok and "alpha/r" in wrong.message
    transposed = exercises.check_lora_gradient_B((s * G @ A.T).T, **args)
    assert not transposed.ok and "transpose" in transposed.message
    assert "sign" in exercises.check_lora_gradient_B(-s * G @ A.T, **args).message
    assert "torch.Tensor" in exercises.check_lora_gradient_B([1, 2], **args).message


def test_dL_dA_right_and_wrong(lora_case):
    B, G, s = lora_case["B"], lora_case["G"], lora_case["alpha"] / lora_case["r"]
    args = dict(B=B, G=G, alpha=lora_case["alpha"], r=lora_case["r"])
    assert exercises.check_lora_gradient_A(s * B.T @ G, **args).ok
    wrong = exercises.check_lora_gradient_A(B.T @ G / s, **args)
    assert not wrong.ok and "r/alpha" in wrong.message
    assert "wrong values" in exercises.check_lora_gradient_A(torch.randn(4, 8), **args).message


def _answer_cell(source):
    """A code cell marked as an nbgrader answer cell."""
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": False, "grade_id": "answer", "locked": False, "schema_version": 3,
                                 "solution": True, "task": False}
    return cell


@pytest.mark.slow  # nbgrader
def test_student_copies_written_and_staleness_detected(tmp_path):
    source, target = tmp_path / "nb", tmp_path / "student"
    source.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[_answer_cell("answer = None\n### BEGIN SOLUTION\nanswer = 42\n"
                                                            "### END SOLUTION\n")])
    nbformat.write(notebook, source / "01_x.ipynb")
    assert student_copies.stale_student_notebooks(source, target) == ["01_x.ipynb"]
    student_copies.write_student_notebooks(source, target)
    assert student_copies.stale_student_notebooks(source, target) == []
    student = nbformat.read(target / "01_x.ipynb", as_version=4)
    assert "42" not in student.cells[0].source and "NotImplementedError" in student.cells[0].source
    notebook.cells[0].source += "print(answer)\n"
    nbformat.write(notebook, source / "01_x.ipynb")
    assert student_copies.stale_student_notebooks(source, target) == ["01_x.ipynb"]


def test_repository_student_notebooks_are_current():
    stale = student_copies.stale_student_notebooks()
    assert stale == [], f"student notebooks are stale: run `lora-leak student` ({stale})"


def test_label_from_bias_right_and_wrong():
    gradient = torch.tensor([0.3, -0.3])  # dL/db = softmax − onehot(y): the true class (1) is negative
    assert exercises.check_label_from_bias(1, gradient).ok
    assert exercises.check_label_from_bias(torch.tensor(1), gradient).ok
    argmax = exercises.check_label_from_bias(0, gradient)
    assert not argmax.ok and "negative" in argmax.message and "argmin" in argmax.message
    delta = -0.5 * gradient  # one SGD step flips the signs
    assert exercises.check_label_from_bias(1, delta, kind="delta").ok
    like_gradient = exercises.check_label_from_bias(0, delta, kind="delta")
    assert not like_gradient.ok and "like a gradient" in like_gradient.message
    assert "class index" in exercises.check_label_from_bias("positive", gradient).message
    assert "does not exist" in exercises.check_label_from_bias(2, gradient).message
    assert "int" in exercises.check_label_from_bias(0.0, gradient).message
    with pytest.raises(ValueError, match="kind"):
        exercises.check_label_from_bias(1, gradient, kind="weights")


@pytest.fixture
def lora_update():
    """A LoRA update as the course's clients send it: 2 layers × (query, value), r = 4, d = 16, a 2-class head."""
    update = {}
    for layer in range(2):
        for target in ("query", "value"):
            prefix = f"bert.encoder.layer.{layer}.attention.self.{target}"
            update[f"{prefix}.lora_A.default.weight"] = torch.zeros(4, 16)
            update[f"{prefix}.lora_B.default.weight"] = torch.zeros(16, 4)
    update["classifier.modules_to_save.default.weight"] = torch.zeros(2, 16)
    update["classifier.modules_to_save.default.bias"] = torch.zeros(2)
    return update


def test_update_bytes_right_and_wrong(lora_update):
    adapter, head = 2 * 2 * (4 * 16 + 16 * 4), 2 * 16 + 2
    truth = 4 * (adapter + head)
    assert exercises.check_update_bytes(truth, lora_update).ok
    assert "numbers, not bytes" in exercises.check_update_bytes(adapter + head, lora_update).message
    assert "bits" in exercises.check_update_bytes(8 * truth, lora_update).message
    assert "head" in exercises.check_update_bytes(4 * adapter, lora_update).message
    assert "bias" in exercises.check_update_bytes(truth - 8, lora_update).message
    half = exercises.check_update_bytes(4 * (adapter // 2 + head), lora_update)
    assert not half.ok and "both A" in half.message
    full = exercises.check_update_bytes(4 * (2 * 2 * 16 * 16 + head), lora_update)
    assert not full.ok and "full d_out × d_in" in full.message
    assert "too many" in exercises.check_update_bytes(truth + 1, lora_update).message
    assert "int" in exercises.check_update_bytes("4 kB", lora_update).message


def test_update_bytes_names_one_layer_when_layers_and_targets_differ(lora_update):
    for name in [n for n in lora_update if ".value." in n]:
        del lora_update[name]  # query only, and a third layer: one layer is a third of the adapter
    lora_update["bert.encoder.layer.2.attention.self.query.lora_A.default.weight"] = torch.zeros(4, 16)
    lora_update["bert.encoder.layer.2.attention.self.query.lora_B.default.weight"] = torch.zeros(16, 4)
    adapter, head = 3 * (4 * 16 + 16 * 4), 2 * 16 + 2
    one_layer = exercises.check_update_bytes(4 * (adapter // 3 + head), lora_update)
    assert not one_layer.ok and "one layer" in one_layer.message and "3" in one_layer.message


def test_rank_bound_right_and_wrong():
    assert exercises.check_rank_bound(4, 9, 4).ok
    assert exercises.check_rank_bound([3, 4, 4], [3, 9, 20], 4).ok
    assert "that is n" in exercises.check_rank_bound([3, 9, 20], [3, 9, 20], 4).message
    assert "that is r" in exercises.check_rank_bound([4, 4, 4], [3, 9, 20], 4).message
    assert "larger" in exercises.check_rank_bound([4, 9, 20], [3, 9, 20], 4).message
    odd = exercises.check_rank_bound([3, 4, 5], [3, 9, 20], 4)
    assert not odd.ok and "n = 20" in odd.message
    assert "one rank per token count" in exercises.check_rank_bound([3, 4], [3, 9, 20], 4).message
    assert "int" in exercises.check_rank_bound(4.0, 9, 4).message


@pytest.fixture
def client_updates():
    torch.manual_seed(0)
    updates = [{"A": torch.randn(2, 3), "B": torch.randn(3, 2)} for _ in range(3)]
    return updates, [10, 11, 30]


def test_weighted_mean_right_and_wrong(client_updates):
    updates, weights = client_updates
    right = {n: sum(w * u[n] for w, u in zip(weights, updates)) / sum(weights) for n in ("A", "B")}
    assert exercises.check_weighted_mean(right, updates, weights).ok
    plain = {n: sum(u[n] for u in updates) / 3 for n in ("A", "B")}
    assert "plain mean" in exercises.check_weighted_mean(plain, updates, weights).message
    summed = {n: sum(w * u[n] for w, u in zip(weights, updates)) for n in ("A", "B")}
    assert "weighted sum" in exercises.check_weighted_mean(summed, updates, weights).message
    per_client = {n: v / 3 for n, v in summed.items()}
    assert "number of clients" in exercises.check_weighted_mean(per_client, updates, weights).message
    assert "missing 'B'" in exercises.check_weighted_mean({"A": right["A"]}, updates, weights).message
    assert "shape" in exercises.check_weighted_mean({"A": right["A"].T, "B": right["B"]}, updates, weights).message
    assert "dict" in exercises.check_weighted_mean(right["A"], updates, weights).message
    product = {"A": right["A"], "B": right["B"] * 2}
    assert "wrong values" in exercises.check_weighted_mean(product, updates, weights).message


def test_gradient_from_delta_right_and_wrong(client_updates):
    gradient, lr = client_updates[0][0], 0.1
    delta = {n: -lr * g for n, g in gradient.items()}
    assert exercises.check_gradient_from_delta({n: -d / lr for n, d in delta.items()}, delta, lr).ok
    def scaled(factor):
        return {n: factor * d for n, d in delta.items()}

    assert "not divided by lr" in exercises.check_gradient_from_delta(scaled(-1), delta, lr).message
    assert "multiplied by lr" in exercises.check_gradient_from_delta(scaled(-lr), delta, lr).message
    assert "wrong sign" in exercises.check_gradient_from_delta(scaled(1 / lr), delta, lr).message
    assert "delta itself" in exercises.check_gradient_from_delta(delta, delta, lr).message
    with pytest.raises(ValueError, match="learning rate"):
        exercises.check_gradient_from_delta(delta, delta, 0.0)


@pytest.mark.slow  # nbgrader
def test_cli_student_writes_copies_and_check_reports_stale(tmp_path, capsys):
    from lora_leak_lib import cli

    source = tmp_path / "nb"
    source.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[_answer_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n")])
    nbformat.write(notebook, source / "01_x.ipynb")
    folders = ["--source", str(source), "--target", str(tmp_path / "student")]
    assert cli.main(["student", "--check", *folders]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "01_x.ipynb" in out and "lora-leak student" in out
    assert cli.main(["student", *folders]) == 0
    assert (tmp_path / "student" / "01_x.ipynb").exists()
    assert cli.main(["student", "--check", *folders]) == 0
    assert cli.main(["student", "--source", str(tmp_path / "nowhere")]) == 2
    assert "no notebook folder" in capsys.readouterr().err


@pytest.fixture
def linear_case():
    """One sample through ``y = W x + b`` under cross-entropy: dL/dW = δ xᵀ, dL/db = δ (which sums to 0)."""
    torch.manual_seed(0)
    x = torch.rand(6)
    delta = torch.softmax(torch.randn(4), 0) - torch.eye(4)[2]
    return x, torch.outer(delta, x), delta


def test_linear_input_right_and_wrong(linear_case):
    x, G_W, g_b = linear_case
    assert exercises.check_linear_input(G_W[0] / g_b[0], G_W, g_b).ok
    i = int(g_b.abs().argmax())
    row = exercises.check_linear_input(G_W[i], G_W, g_b)
    assert not row.ok and "divide it" in row.message
    mixed = exercises.check_linear_input(G_W[0] / g_b[1], G_W, g_b)
    assert not mixed.ok and "the same i" in mixed.message
    assert "divided by zero" in exercises.check_linear_input(G_W[0] / torch.zeros(6), G_W, g_b).message
    assert "column" in exercises.check_linear_input(G_W[:, 0] / g_b, G_W, g_b).message
    assert "flatten" in exercises.check_linear_input(x[None], G_W, g_b).message
    assert "wrong values" in exercises.check_linear_input(torch.rand(6), G_W, g_b).message


@pytest.fixture
def embedding_gradients():
    """A full fine-tuning gradient of "[CLS] a b a c [SEP]" (ids 101, 7, 8, 7, 9, 102): V = 120, d = 5, 8 positions."""
    torch.manual_seed(0)
    sentence = [101, 7, 8, 7, 9, 102]
    per_position = torch.randn(len(sentence), 5)
    words, positions = torch.zeros(120, 5), torch.zeros(8, 5)
    for p, t in enumerate(sentence):
        words[t] += per_position[p]
        positions[p] = per_position[p]
    return words, positions, (101, 102, 0)


def test_token_set_right_and_wrong(embedding_gradients):
    words, _, special = embedding_gradients
    assert exercises.check_token_set([7, 8, 9], words, special).ok
    assert exercises.check_token_set(torch.tensor([9, 8, 7, 7]), words, special).ok
    assert "special tokens" in exercises.check_token_set({7, 8, 9, 101, 102}, words, special).message
    assert "column indices" in exercises.check_token_set([0, 1, 2, 3, 4], words, special).message
    assert "all-zero row" in exercises.check_token_set([7, 8, 9, 10], words, special).message
    missed = exercises.check_token_set([7, 8], words, special)
    assert not missed.ok and "missed 1" in missed.message
    assert "list or set of ints" in exercises.check_token_set("a b c", words, special).message


def test_sequence_length_right_and_wrong(embedding_gradients):
    _, positions, _ = embedding_gradients
    assert exercises.check_sequence_length(4, positions, distinct_tokens=3).ok
    assert "[CLS] and [SEP]" in exercises.check_sequence_length(6, positions, distinct_tokens=3).message
    assert "distinct tokens" in exercises.check_sequence_length(3, positions, distinct_tokens=3).message
    assert "embedding width" in exercises.check_sequence_length(5, positions, distinct_tokens=3).message
    assert "too short" in exercises.check_sequence_length(2, positions).message
    assert "int" in exercises.check_sequence_length(4.0, positions).message


def test_token_order_right_and_wrong():
    reference, special = [7, 8, 9, 10], (101, 102)
    assert exercises.check_token_order([7, 8, 9, 10], reference, special).ok
    assert "drop [CLS]" in exercises.check_token_order([101, 7, 8, 9, 10, 102], reference, special).message
    assert "reversed" in exercises.check_token_order([10, 9, 8, 7], reference, special).message
    swapped = exercises.check_token_order([8, 7, 9, 10], reference, special)
    assert not swapped.ok and "2 of 4" in swapped.message
    assert "not in the sentence" in exercises.check_token_order([7, 8, 9, 11], reference, special).message
    assert "has 4" in exercises.check_token_order([7, 8, 9], reference, special).message
    assert "no order" in exercises.check_token_order({7, 8, 9, 10}, reference, special).message


def test_span_distance_right_and_wrong():
    torch.manual_seed(0)
    Q = torch.linalg.qr(torch.randn(8, 3))[0].T   # orthonormal rows: a 3-d span in R^8
    x = torch.stack([torch.randn(3) @ Q, torch.randn(8)])   # one vector inside the span, one outside
    residual = x - x @ Q.T @ Q
    right = residual.norm(dim=1) / x.norm(dim=1)
    assert exercises.check_span_distance(right, x, Q).ok and right[0] < 1e-6 < right[1]
    assert "not relative" in exercises.check_span_distance(residual.norm(dim=1), x, Q).message
    assert "squared" in exercises.check_span_distance(right ** 2, x, Q).message
    inside = (x @ Q.T @ Q).norm(dim=1) / x.norm(dim=1)
    assert "left outside" in exercises.check_span_distance(inside, x, Q).message


def test_span_dimension_right_and_wrong():
    n, r = [4, 12, 20], 4   # 6, 14, 22 inputs against 8 rows
    assert exercises.check_span_dimension([6, 8, 8], n, r).ok
    assert "[CLS] and [SEP]" in exercises.check_span_dimension([4, 8, 8], n, r).message
    assert "2·r = 8 rows" in exercises.check_span_dimension([4, 4, 4], n, r).message
    assert "number of rows" in exercises.check_span_dimension([8, 8, 8], n, r).message
    assert "number of inputs" in exercises.check_span_dimension([6, 14, 22], n, r).message
    assert "n = 12" in exercises.check_span_dimension([6, 7, 8], n, r).message
    assert exercises.check_span_dimension(8, 12, 4).ok


def test_defence_choice_right_and_wrong():
    from lora_leak_lib.experiments.sweep import SettingResult

    def result(defence, value, accuracy, rouge1):
        label = defence if value is None else f"{defence} {value:g}"
        return SettingResult(defence, value, label, accuracy, 0.5, [0.5, accuracy], rouge1, rouge1, 2)

    results = [result("none", None, 0.80, 1.0), result("noise", 1e-4, 0.79, 0.1), result("noise", 1e-5, 0.80, 0.6),
               result("dp-sgd", 1.0, 0.50, 0.0)]
    assert exercises.check_defence_choice("noise 0.0001", results).ok
    assert exercises.check_defence_choice(results[1], results).ok
    assert "60% ROUGE-1" in exercises.check_defence_choice("noise 1e-05", results).message
    costly = exercises.check_defence_choice("dp-sgd 1", results)
    assert not costly.ok and "30 accuracy points" in costly.message
    assert "no defence" in exercises.check_defence_choice("none", results).message
    assert "no setting 'top-k 0.1'" in exercises.check_defence_choice("top-k 0.1", results).message
    assert "string" in exercises.check_defence_choice(0.1, results).message
    with pytest.raises(ValueError, match="baseline"):
        exercises.check_defence_choice("noise 0.0001", results[1:])


def recorded_table(settings):
    """A recorded ``lora-leak evaluate`` table with one row per (label, ROUGE-1 or None, accuracy)."""
    rows, utility = [], {}
    for label, rouge1, accuracy in settings:
        name, _, value = label.partition(" ")
        rows.append({"defence_label": label, "defence": name, "value": float(value) if value else None,
                     "rouge1": rouge1, "attack": "lora-best", "aware": True, "setting_label": "main",
                     "epsilon": None, "error": None if rouge1 is not None else "ValueError: refused"})
        utility[label] = {"accuracy": accuracy, "learns": True}
    return {"threshold": 0.2, "keep": 0.95, "rows": rows, "utility": utility}


def test_recorded_defence_choice_right_and_wrong():
    record = recorded_table([("none", 1.0, 0.80), ("noise 0.001", 0.9, 0.79), ("batch 4", 0.1, 0.80),
                             ("dp-sgd 1", 0.0, 0.50), ("frozen-layers 1", None, 0.80)])
    assert exercises.check_recorded_defence("batch 4", record).ok
    assert "90% ROUGE-1" in exercises.check_recorded_defence("noise 0.001", record).message
    assert "keeps 62%" in exercises.check_recorded_defence("dp-sgd 1", record).message
    assert "no attack ran" in exercises.check_recorded_defence("frozen-layers 1", record).message
    assert "no defence" in exercises.check_recorded_defence("none", record).message
    assert "no setting 'top-k 0.1'" in exercises.check_recorded_defence("top-k 0.1", record).message
    assert "string" in exercises.check_recorded_defence(4, record).message
    assert not exercises.check_recorded_defence(None, record).ok  # batch 4 meets both
    hopeless = recorded_table([("none", 1.0, 0.80), ("noise 0.001", 0.9, 0.79), ("dp-sgd 1", 0.0, 0.50)])
    assert exercises.check_recorded_defence(None, hopeless).ok
    assert not exercises.check_recorded_defence("dp-sgd 1", hopeless).ok


def test_noise_multiplier_right_and_wrong():
    from lora_leak_lib.defenses import epsilon

    candidates, steps = [0.5, 1.0, 2.0, 4.0, 8.0], 100
    spent = {s: epsilon(s, 1.0, steps)[0] for s in candidates}
    target = (spent[2.0] + spent[4.0]) / 2   # σ = 4 is the least noise under it
    assert exercises.check_noise_multiplier(4.0, candidates, target, 1.0, steps).ok
    assert exercises.check_noise_multiplier(4, candidates, target, 1.0, steps).ok
    assert "above" in exercises.check_noise_multiplier(2.0, candidates, target, 1.0, steps).message
    assert "less noise" in exercises.check_noise_multiplier(8.0, candidates, target, 1.0, steps).message
    assert "pick one" in exercises.check_noise_multiplier(3.0, candidates, target, 1.0, steps).message
    with pytest.raises(ValueError, match="larger noise"):
        exercises.check_noise_multiplier(8.0, candidates, spent[8.0] / 2, 1.0, steps)


def test_an_answer_made_on_the_cpu_is_checked_against_values_on_the_device(device):
    # A learner on a GPU writes torch.tensor(...) on the CPU; the expected values live on the library's device.
    expected = {"a": torch.ones(2, 3, device=device), "b": torch.zeros(3, device=device)}
    assert exercises.check_tensor("x", torch.ones(2, 3), expected["a"]).ok
    assert exercises.check_state("update", {"a": torch.ones(2, 3), "b": torch.zeros(3)}, expected).ok
    assert not exercises.check_state("update", {"a": -torch.ones(2, 3), "b": torch.zeros(3)}, expected).ok


def test_a_wrong_answer_gets_a_hint_not_the_answer():
    from lora_leak_lib.defenses import epsilon

    candidates, steps = [0.5, 1.0, 2.0, 4.0, 8.0], 100
    target = (epsilon(2.0, 1.0, steps)[0] + epsilon(4.0, 1.0, steps)[0]) / 2   # σ = 4 is the answer
    for wrong in (2.0, 8.0, 3.0):
        message = exercises.check_noise_multiplier(wrong, candidates, target, 1.0, steps).message
        assert "σ = 4" not in message, message
    bias = torch.tensor([0.2, 0.3, -0.9, 0.4])   # class 2
    for wrong in (3, 0, 7, "positive", 1.5):
        feedback = exercises.check_label_from_bias(wrong, bias)
        assert not feedback.ok and "class 2" not in feedback.message and str(feedback).startswith("❌ not yet: ")
    positions = torch.zeros(8, 5)
    positions[:6] = 1.0   # [CLS], 4 tokens, [SEP]
    for wrong in (6, 3, 5, 2):
        message = exercises.check_sequence_length(wrong, positions, distinct_tokens=3).message
        assert "4" not in message.replace(str(wrong), ""), message
