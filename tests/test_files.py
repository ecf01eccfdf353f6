import json

from utils.files import json_text, write_json_atomic


def test_json_text_puts_lists_without_objects_on_one_line_and_reads_back(tmp_path):
    obj = {
        "runs": [{"curve": [[4248, -20.0], [24992, -19.5]], "seed": 0, "tags": []}],
        "b": {"nested": {"x": None, "y": "s"}, "empty": {}},
        "a": [1.5, "two", [3, [4]]],
        "keys": {7: "int", True: "bool", None: "none", 2.5: "float"},
    }
    text = json_text(obj)
    assert json.loads(text) == json.loads(json.dumps(obj))
    lines = text.splitlines()
    assert ' "a": [1.5, "two", [3, [4]]],' == lines[1]  # sorted keys, the list inline
    assert '   "curve": [[4248, -20.0], [24992, -19.5]],' in lines
    assert '  "empty": {},' in lines and '   "tags": []' in lines
    assert lines[0] == "{" and lines[-1] == "}"

    path = tmp_path / "x.json"
    write_json_atomic(str(path), obj)
    assert path.read_text() == text + "\n"
