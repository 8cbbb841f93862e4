"""A sync file the back office, or an acknowledgment the license server, refuses as invalid is set aside, so that
it never blocks its server again; the quarantine playbook lists it and gives it another try."""

from __future__ import annotations

from test_sync_support import playbook, sync


def test_refused_files_are_set_aside_listed_and_released(lab_factory, tmp_path):
    lab = lab_factory(2, "--records", "3")
    store = tmp_path / "store"
    sync(lab, store)
    junk_ack = store / "lls001" / "acks" / "20260101T000000.ack"
    junk_ack.write_bytes(b"not an acknowledgment")
    junk_file = store / "lls002" / "outbox" / "20200101T000000.fnesync"
    junk_file.write_bytes(b"not a sync message")
    lab.activity(2)

    refused = sync(lab, store, expect_rc=2)
    assert refused.failed() == {"lls001", "lls002"}, refused
    assert "20260101T000000.ack was set aside" in refused.out and "20200101T000000.fnesync was set aside" in refused.out
    assert (store / "lls001" / "quarantine" / junk_ack.name).exists() and not junk_ack.exists()
    assert (store / "lls002" / "quarantine" / junk_file.name).exists() and not junk_file.exists()

    after = sync(lab, store)  # the next run goes on without them
    assert not after.failed(), after
    lab.verify(complete=True)
    assert "2 file(s) quarantined" in after.out

    listed = playbook("quarantine", lab.inventory, store)
    assert junk_ack.name in listed.out and junk_file.name in listed.out
    assert not list((store / "lls001" / "acks").glob("*")), "listing must move nothing"
    released = playbook("quarantine", lab.inventory, store, "-e", "fne_sync_release=true")
    assert released.changed() == {"lls001", "lls002"}, released
    assert junk_ack.exists() and junk_file.exists()
    again = sync(lab, store, expect_rc=2)  # still invalid: set aside again, nothing else harmed
    assert again.failed() == {"lls001", "lls002"} and not junk_ack.exists() and not junk_file.exists()
    lab.verify(complete=True)
