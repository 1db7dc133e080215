"""The workspace model, claim mapping and share plans (pure, no hub)."""

from __future__ import annotations

import re

import pytest

from studio_spawner.errors import OptionsError
from studio_spawner.options import parse_options
from studio_spawner.sharing import Share, SharePlan, changed_groups, plan_studio_shares
from studio_spawner.workspaces import (
    ClaimMapping,
    WorkspaceConfigError,
    groups_for,
    manager_scopes,
    merge,
    parse_members,
    roles_of,
    workspaces_with,
)


def test_a_member_is_in_one_group_per_role_at_or_below_theirs():
    assert groups_for({"genomics": "launch", "lab": "view"}) == [
        "workspace:genomics:connect", "workspace:genomics:launch", "workspace:genomics:view",
        "workspace:lab:view",
    ]


def test_workspaces_with_reads_the_minimum_roles_group_only():
    groups = groups_for({"genomics": "launch", "lab": "connect"}) + [
        "staff", "workspace:Bad:launch", "workspace:x:launcher", "xworkspace:y:launch"]
    assert workspaces_with(groups, "launch") == ["genomics"]
    assert workspaces_with(groups, "connect") == ["genomics", "lab"]


def test_merge_keeps_the_highest_role():
    assert merge({"a": "view", "b": "admin"}, {"a": "launch", "b": "connect"}) == {
        "a": "launch", "b": "admin"}


def test_managers_get_servers_scopes_without_access():
    scopes = manager_scopes("genomics")
    assert "servers!group=workspace:genomics:view" in scopes
    assert not any(s.startswith(("access:", "admin:", "shares")) for s in scopes)


@pytest.mark.parametrize(("raw", "message"), [
    ([], "WS: must be a mapping of workspace -> {user: role}"),
    ({"Genomics": {"ann": "launch"}}, "WS['Genomics']: workspace names are 1-63 lowercase"),
    ({"-x": {}}, "WS['-x']: workspace names"),
    ({"genomics\n": {}}, "WS['genomics\\n']: workspace names"),
    ({"genomics": ["ann"]}, "WS['genomics']: must be a mapping of user name -> role"),
    ({"genomics": {"ann smith": "launch"}}, "WS['genomics']: 'ann smith' is not a user name"),
    ({"genomics": {"ann": "Launch"}}, "WS['genomics']['ann']: 'Launch' is not a role here; use "
                                      "one of view, connect, launch, maintain, admin, owner"),
    ({"genomics": {"ann": "launch "}}, "WS['genomics']['ann']: 'launch ' is not a role"),
])
def test_members_are_validated_with_full_matches(raw, message):
    with pytest.raises(WorkspaceConfigError, match=re.escape(message)):
        parse_members(raw, "WS")


def test_valid_members_parse():
    assert parse_members({"genomics": {"ann": "owner", "b.o@x": "view"}}, "WS") == {
        "genomics": {"ann": "owner", "b.o@x": "view"}}


def test_the_member_star_stands_for_every_user():
    members = {"demo": {"*": "launch", "ann": "admin"}, "lab": {"*": "view"}, "x": {"ben": "view"}}
    assert roles_of(members, "ann") == {"demo": "admin", "lab": "view"}
    assert roles_of(members, "zed") == {"demo": "launch", "lab": "view"}


SETTINGS = ("A.claim_pattern", "A.claim_roles")


def test_claims_map_idp_groups_to_workspaces():
    mapping = ClaimMapping.build(r"(?P<workspace>[a-z0-9-]+):(?P<role>[a-z]+)",
                                 {"admins": "admin"}, SETTINGS)
    found, ignored = mapping.memberships(
        ["genomics:admins", "genomics:view", "lab:launch", "lab:emperor", "staff",
         "genomics:launch:extra"])
    assert found == {"genomics": "admin", "lab": "launch"}
    assert ignored == ["lab:emperor"]  # matched the pattern, but no such role


def test_claim_workspaces_must_be_valid_names():
    mapping = ClaimMapping.build(r"(?P<workspace>.+)/(?P<role>.+)", {}, SETTINGS)
    assert mapping.memberships(["Genomics/launch", "ok/launch"]) == (
        {"ok": "launch"}, ["Genomics/launch"])


@pytest.mark.parametrize(("pattern", "roles", "message"), [
    ("(?P<workspace>", {}, "A.claim_pattern: not a regular expression"),
    ("(?P<workspace>.+):(?P<level>.+)", {}, "A.claim_pattern: add the named group(s) role"),
    (".+", {}, "A.claim_pattern: add the named group(s) role, workspace"),
    ("", {"admins": "boss"}, "A.claim_roles['admins']: 'boss' is not a role"),
])
def test_claim_settings_are_validated(pattern, roles, message):
    with pytest.raises(WorkspaceConfigError, match=re.escape(message)):
        ClaimMapping.build(pattern, roles, SETTINGS)


def test_no_pattern_maps_nothing():
    assert ClaimMapping().memberships(["genomics:admin"]) == ({}, [])


# --- share plans ---------------------------------------------------------------------------


def test_a_private_studio_revokes_every_share():
    plan = plan_studio_shares(private=True, workspace="genomics", min_role="connect",
                              owner="ann", members=["ann", "ben"],
                              current=[Share("ann", "rna", user="ben")])
    assert plan == SharePlan(revoke_all=True)


def test_a_shared_studio_gets_its_group_and_each_member_but_the_owner():
    current = [Share("ann", "rna", user="ben"), Share("ann", "rna", user="zed"),
               Share("ann", "rna", group="workspace:lab:connect"),
               Share("ann", "rna", group="admins-of-something")]
    plan = plan_studio_shares(private=False, workspace="genomics", min_role="connect",
                              owner="ann", members=["ann", "ben", "cal"], current=current)
    assert plan == SharePlan(revoke_users=("zed",), revoke_groups=("workspace:lab:connect",),
                             grant_group="workspace:genomics:connect", grant_users=("cal",))


def test_a_studio_without_workspace_is_shared_with_no_one():
    plan = plan_studio_shares(private=False, workspace=None, min_role="connect", owner="ann",
                              members=[], current=[])
    assert plan.revoke_all


def test_changed_groups_only_counts_groups_studios_are_shared_with():
    joined, left = changed_groups(
        ["staff", "workspace:g:view", "workspace:g:connect", "workspace:g:admin"],
        ["workspace:g:view", "workspace:h:view", "workspace:h:owner", "other"])
    assert (joined, left) == ({"workspace:h:view"}, {"workspace:g:connect"})


# --- the form's workspace field ----------------------------------------------------------------


def raw(**extra):
    return {"name": "x", "template": "python", **extra}


def test_a_required_workspace_defaults_to_the_only_one(catalog):
    options = parse_options(raw(), catalog, workspaces=["genomics"], workspace_required=True)
    assert options.workspace == "genomics"


@pytest.mark.parametrize(("workspaces", "extra", "message"), [
    (["genomics", "lab"], {}, "choose the studio's workspace: genomics, lab"),
    ([], {}, "you have no workspace where you may launch studios"),
    (["lab"], {"workspace": "genomics"}, "you cannot launch in this workspace; yours: lab"),
])
def test_a_required_workspace_names_the_field(catalog, workspaces, extra, message):
    with pytest.raises(OptionsError) as failure:
        parse_options(raw(**extra), catalog, workspaces=workspaces, workspace_required=True)
    assert message in failure.value.by_field["workspace"]


def test_without_collaboration_a_studio_may_have_no_workspace(catalog):
    assert parse_options(raw(), catalog, workspaces=["a", "b"]).workspace is None
