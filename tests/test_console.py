from helpers.console import progress_bar


def test_bars_follow_the_environment_switch(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_bar(range(3), disable=False).disable
    monkeypatch.delenv("TQDM_DISABLE")
    bar = progress_bar(range(3), disable=False)
    assert not bar.disable and not bar.leave
    assert list(bar) == [0, 1, 2]
