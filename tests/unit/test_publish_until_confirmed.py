"""Publishing what nobody would ask for again: only the failed items go again, until all pass."""

from runtime.publish import publish_until_confirmed


async def test_only_the_failed_items_are_published_again_until_every_one_is_confirmed() -> (
    None
):
    attempts: list[str] = []
    failing = {"b": 2, "c": 1}  # how many times each fails first

    async def publish(item: str) -> None:
        attempts.append(item)
        if failing.get(item, 0) > 0:
            failing[item] -= 1
            raise ConnectionError("the broker is away")

    rounds: list[int] = []
    await publish_until_confirmed(["a", "b", "c"], publish, rounds.append, retry_s=0)
    assert attempts == ["a", "b", "c", "b", "c", "b"]
    assert rounds == [2, 1]


async def test_nothing_to_publish_returns_at_once() -> None:
    async def publish(item: str) -> None:
        raise AssertionError("nothing to publish")

    await publish_until_confirmed([], publish, lambda failed: None)
