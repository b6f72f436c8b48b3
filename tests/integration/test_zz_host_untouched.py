"""Runs last: the suite left no namespaces, nft tables or changed host-wide sysctls behind."""


from tests.conftest import host_state


def test_host_is_as_the_suite_found_it(request):
    before = request.config._ctd_host_state
    after = host_state()
    assert after == before
    assert not after.get("netns"), f"namespaces left behind: {after.get('netns')}"
