"""An upload's identity includes its options, written the one way they change the result."""

from app.datasets.service import canonical_options, options_key


def test_options_that_mean_the_same_have_one_key() -> None:
    assert options_key({}) == options_key({"encoding": "UTF8"}) == options_key(
        {"encoding": "utf-8"})
    assert options_key({"encoding": "latin-1"}) == options_key({"encoding": "ISO-8859-1"})
    assert options_key({"shape": "1,28,28"}) == options_key({"shape": " 1, 28 ,028"})
    assert canonical_options({"encoding": "Latin-1", "shape": "1, 2"}) == {
        "encoding": "iso8859-1", "shape": "1,2"}


def test_options_that_differ_have_other_keys() -> None:
    keys = {options_key(o) for o in ({}, {"label_column": "a"}, {"label_column": "0"},
                                     {"encoding": "latin-1"}, {"shape": "1,2"},
                                     {"label_column": "a", "shape": "1,2"})}
    assert len(keys) == 6
    # an unknown encoding is kept as given (the upload is then refused when parsed)
    assert canonical_options({"encoding": "no-such"}) == {"encoding": "no-such"}
