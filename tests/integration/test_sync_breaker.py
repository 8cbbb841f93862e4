"""Pre-flight and the back office circuit breaker: what would fail every server is found before any is touched,
and a back office out of reach costs a few uploads' retries, not every server's, with one message and nothing
lost."""

from __future__ import annotations

import re

from fnetest import ansible_env
from test_sync_support import hosts_of, sync


def test_back_office_down_fails_fast_with_one_message(lab_factory, tmp_path):
    """12 servers, two workers, the back office down: after three uploads could not reach it the rest fail at
    once with one message; every downloaded file waits in the outbox and the next run sends it."""
    lab = lab_factory(12, "--records", "5")
    hosts = hosts_of(lab)
    store = tmp_path / "store"
    lab.fault("backoffice", "down")
    down = sync(lab, store, "-e", "fne_sync_workers=2", expect_rc=2,
                env=ansible_env(ANSIBLE_DISPLAY_OK_HOSTS="false"))
    assert down.failed() == set(hosts), down
    tried = set(re.findall(r'"(lls\d+): upload failed: Cannot reach the back office', down.out))
    skipped = set(re.findall(r'"(lls\d+): upload failed: upload not tried: the back office could not be reached by '
                             r'3 uploads in a row', down.out))
    # the three that opened the breaker, and at most one more already on its way in the other worker
    assert 3 <= len(tried) <= 4 and tried | skipped == set(hosts) and not tried & skipped, (tried, skipped)
    retries = re.findall(r"\[WARNING\]: lls\d+: POST \S+deviceservices\S* failed .* retrying", down.out)
    assert len(retries) <= 4 * 3, len(retries)  # three retries for each upload that was tried, none for the rest
    tail = down.out.rstrip().splitlines()[-25:]
    grouped = [line for line in tail if line.startswith(f"FAILED {len(skipped)} servers (")]
    assert len(grouped) == 1 and "every file waits in the outbox and the next run sends it" in grouped[0], tail
    for host in hosts:  # nothing lost: the downloads wait for the back office
        assert len(list((store / host / "outbox").glob("*.fnesync"))) == 1, host

    lab.clear_faults()
    sync(lab, store)
    lab.verify(complete=True)


def test_preflight_stops_before_any_server_is_touched(lab_factory, tmp_path):
    """An unwritable store and a missing back office URL are found before any server is asked anything."""
    lab = lab_factory(3, "--records", "5")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    bad_store = sync(lab, not_a_folder / "store", expect_rc=2)
    assert re.search(r"pre-flight: the store \S+ cannot be written .* No server was touched", bad_store.out)
    no_url = sync(lab, tmp_path / "store", "-e", "fne_backoffice_url=", expect_rc=2)
    assert ("pre-flight: no back office URL for 3 server(s) (lls001, lls002, lls003): set fne_backoffice_url "
            "(or FNE_BACKOFFICE_URL). No server was touched.") in no_url.out
    for name, server in lab.state()["servers"].items():
        assert not server["requests"], (name, server["requests"])
    assert not (tmp_path / "store").exists()
    collect_only = sync(lab, tmp_path / "store2", "-e", "fne_backoffice_url=", "--tags", "collect")
    assert not collect_only.failed(), "collecting needs no back office"
    assert all(server["requests"].get("generate") for server in lab.state()["servers"].values())
