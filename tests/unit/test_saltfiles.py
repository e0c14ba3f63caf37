"""What the fingerprint hashes of the file server (saltami/saltfiles.py): the files a state
run fetched and the sources its states name, turned into entries; the entries hashed with
Salt's own file client over a file_roots of files made here (no daemon)."""
import pytest
import salt.config

from saltami import saltfiles


def test_referenced_finds_salt_urls_anywhere_in_low_chunks_of_the_saltenv():
    low = [
        {"state": "file", "fun": "managed", "name": "/etc/a", "source": "salt://a/files/conf"},
        # a TOFS list of candidates, one with a query
        {"state": "file", "fun": "managed", "name": "/etc/b",
         "source": ["salt://b/files/host/conf", "salt://b/files/default/conf?saltenv=base"]},
        {"state": "file", "fun": "recurse", "name": "/srv/c", "source": "salt://c/tree/"},
        {"state": "cmd", "fun": "script", "name": "x", "source": "salt://other/x.sh?saltenv=dev",
         "env": [{"URL": "http://example.invalid/"}], "nested": {"deep": ["salt://d//e/./f"]}},
    ]
    assert saltfiles.referenced(low) == {"a/files/conf", "b/files/host/conf", "b/files/default/conf", "c/tree",
                                         "d/e/f"}


def test_referenced_ignores_a_render_error():
    # state.show_low_sls gives a list of error strings when the SLS do not render
    assert saltfiles.referenced(["Rendering SLS 'base:a' failed: salt://a/init.sls"]) == set()
    assert saltfiles.referenced({"unexpected": "salt://a"}) == set()


def test_cached_on_minion_keeps_the_files_of_the_saltenv_by_their_path_in_the_tree():
    listing = ["/run/salt/cache/files/base/a/init.sls", "/run/salt/cache/files/base/b/map.jinja",
               "/run/salt/cache/files/dev/a/init.sls", "/run/salt/cache/file_lists/roots/base.p",
               "/run/salt/cache/roots/hash/base/a/init.sls.hash.sha256"]
    assert saltfiles.cached_on_minion(listing) == ["a/init.sls", "b/map.jinja"]
    assert saltfiles.cached_on_minion(None) == []


def test_cached_lists_a_cache_directory(tmp_path):
    (tmp_path / "a" / "files").mkdir(parents=True)
    (tmp_path / "a" / "init.sls").write_text("x")
    (tmp_path / "a" / "files" / "conf").write_text("y")
    assert saltfiles.cached(tmp_path) == ["a/files/conf", "a/init.sls"]
    assert saltfiles.cached(tmp_path / "none") == []


def test_render_entries_merge_fetched_and_referenced_and_stand_custom_dirs_for_their_files():
    entries = saltfiles.render_entries(["a/init.sls", "_modules/mine.py", "_states/mine.py"],
                                       [{"source": "salt://a/files/conf"}])
    assert "a/init.sls" in entries and "a/files/conf" in entries
    assert "_modules/mine.py" not in entries and "_modules" in entries and "_states" in entries
    assert set(saltfiles.CUSTOM_DIRS) <= set(entries)
    assert entries == sorted(entries)


def test_first_entries_cover_each_sls_top_directory():
    entries = saltfiles.first_entries(["postgres.python", "postgres", "web"])
    assert {"postgres", "postgres.sls", "web", "web.sls", "_modules"} <= set(entries)
    assert "postgres/python" not in entries


def test_files_hash_depends_on_every_path_and_hash_and_not_on_order():
    files = {"a/init.sls": "sha256:1", "b/map.jinja": "sha256:2", "c/missing": None}
    same = dict(reversed(list(files.items())))
    assert saltfiles.files_hash(files) == saltfiles.files_hash(same)
    for other in ({**files, "b/map.jinja": "sha256:3"}, {**files, "c/missing": "sha256:4"},
                  {k: v for k, v in files.items() if k != "a/init.sls"}, {**files, "d": None}):
        assert saltfiles.files_hash(other) != saltfiles.files_hash(files)


def test_changed_files_names_each_change():
    before = {"a": "h1", "b": "h2", "c": None, "d": "h4"}
    now = {"a": "h1", "b": "h3", "c": "h5", "e": "h6"}
    assert saltfiles.changed_files(before, now) == ["salt://b changed", "salt://c added", "salt://d removed",
                                                    "salt://e added"]
    assert saltfiles.changed_files(before, before) == []


@pytest.fixture
def files(tmp_path):
    """SaltFiles over a file_roots made here, read by Salt's local file client."""
    roots = tmp_path / "srv"
    for rel, content in {"a/init.sls": "a", "a/files/conf": "conf", "c/tree/one": "1", "c/tree/two": "2",
                         "_modules/mine.py": "x = 1\n"}.items():
        (roots / rel).parent.mkdir(parents=True, exist_ok=True)
        (roots / rel).write_text(content)
    opts = salt.config.minion_config(None)
    opts.update(file_client="local", file_roots={"base": [str(roots)]}, cachedir=str(tmp_path / "cache"),
                fileserver_list_cache_time=0)
    return roots, saltfiles.SaltFiles(opts)


def test_render_files_hash_files_expand_directories_and_mark_what_is_missing(files):
    roots, sf = files
    found = sf.render_files(["a/init.sls", "a/files/conf", "c/tree", "a/files/candidate", "_modules", "_grains"])
    assert sorted(found) == ["_modules/mine.py", "a/files/candidate", "a/files/conf", "a/init.sls",
                             "c/tree/one", "c/tree/two"]
    assert found["a/files/candidate"] is None
    assert all(v.startswith("sha256:") for k, v in found.items() if k != "a/files/candidate")
    assert found["c/tree/one"] != found["c/tree/two"]
    # a change of content, a file that appears in a directory, a candidate that appears
    (roots / "a" / "files" / "conf").write_text("conf, changed")
    (roots / "c" / "tree" / "three").write_text("3")
    (roots / "a" / "files" / "candidate").write_text("now here")
    again = sf.render_files(["a/init.sls", "a/files/conf", "c/tree", "a/files/candidate", "_modules", "_grains"])
    assert saltfiles.changed_files(found, again) == ["salt://a/files/candidate added", "salt://a/files/conf changed",
                                                     "salt://c/tree/three added"]
