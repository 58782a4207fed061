import pytest

from order_integration.exceptions import InvariantViolation, PermanentError
from order_integration.export import summarise, summary_line
from order_integration.windows import Window

pytestmark = pytest.mark.unit

W = Window.parse("2026-11-02T10:00:00Z", "2026-11-02T11:00:00Z")
VALIDATED = {"extracted": 10, "quarantined": 1, "already_delivered": 2, "not_ready": 3}


def test_summary_adds_the_load_side_already_delivered():
    s = summarise("demo", W, VALIDATED, {"delivered": 3, "already_delivered": 1, "files": ["f.csv"]})
    assert (s["delivered"], s["already_delivered"]) == (3, 3)
    assert summary_line(s) == (
        "order export demo [2026-11-02T10:00:00Z, 2026-11-02T11:00:00Z): extracted=10 = delivered=3 + "
        "quarantined=1 + already_delivered=3 + not_ready=3; files=f.csv")


def test_counts_that_do_not_add_up_fail_loudly():
    with pytest.raises(InvariantViolation, match="counts do not add up") as raised:
        summarise("demo", W, VALIDATED, {"delivered": 2, "already_delivered": 1, "files": []})
    assert isinstance(raised.value, PermanentError), "a broken invariant is not retried"


def test_no_file_is_shown_as_a_dash():
    s = summarise("demo", W, {**VALIDATED, "extracted": 6}, {"delivered": 0, "already_delivered": 0, "files": []})
    assert summary_line(s).endswith("files=-")


def test_a_run_by_ids_names_them_after_the_counts():
    second = Window.parse("2026-12-06T21:29:58Z", "2026-12-06T21:29:59Z")  # the trigger second
    s = summarise("demo", second, {**VALIDATED, "extracted": 6}, {"delivered": 0, "already_delivered": 0,
                                                                  "files": []}, order_ids=[1001, 1002])
    assert s["order_ids"] == ["1001", "1002"]
    assert summary_line(s).endswith("files=-; order_ids=1001,1002")
    many = summarise("demo", second, {**VALIDATED, "extracted": 6}, {"delivered": 0, "already_delivered": 0,
                                                                     "files": []}, order_ids=range(1, 9))
    assert summary_line(many).endswith("; order_ids=1,2,3,4,5 +3 more")
    assert "order_ids" not in summary_line(summarise("demo", W, VALIDATED, {"delivered": 3, "already_delivered": 1,
                                                                             "files": ["f.csv"]}))

