"""When a wait for an image is over: nova deletes the image of a failed snapshot, and Glance
answers the wait's next question with a 404 or, asked a moment earlier, with the image in
status deleted; both are the same outcome and say so (the fault tests saw either, by timing)."""
import pytest

from saltami.cloud import glance


@pytest.mark.parametrize("image", [None, {"status": "deleted"}, {"status": "pending_delete"}],
                         ids=["404", "deleted", "pending_delete"])
def test_an_image_deleted_while_waited_for_is_gone(image):
    assert glance._ended(image).startswith("it is gone")


def test_a_killed_image_says_its_status_and_others_are_waited_for():
    assert glance._ended({"status": "killed"}) == "its status is killed"
    assert [glance._ended({"status": s}) for s in ("queued", "saving", "importing", "active")] == [None] * 4
