"""A template gets what it asks for or is refused at push: no field accepted and then ignored, no parameter
value that can become code in its scripts."""

from __future__ import annotations

import pytest

from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from dockyard_sdk.manifest import NOT_SUPPORTED, TemplateManifest, unsupported
from tests.harness import Harness, manifest_yaml, tar_gz


def _refused(h: Harness, text: str, files: dict[str, str] | None = None) -> ApiError:
    with pytest.raises(ApiError) as info:
        h.admin.create_template(tar_gz({"dockyard.yaml": text, **(files or {})}))
    # Nothing was made: no template, no audit entry.
    assert h.admin.list_templates() == []
    assert h.admin.audit(action="template.create").audit_logs == []
    return info.value


def test_every_field_the_schema_knows_is_acted_on() -> None:
    # A field added to NOT_SUPPORTED needs a test here that it is refused at push, naming it.
    assert NOT_SUPPORTED == ()
    assert unsupported(TemplateManifest(name="t", image="x")) == []


def test_a_new_version_with_an_unsupported_field_leaves_the_template_as_it_was(h: Harness) -> None:
    template = h.template(name="py")
    with pytest.raises(ApiError) as info:
        h.admin.create_template_version(
            "py",
            tar_gz(
                {
                    "dockyard.yaml": manifest_yaml(
                        name="py", network={"egress": "allowlist", "allow": ["https://x.org/path"]}
                    )
                }
            ),
        )
    assert info.value.status_code == 422
    assert [v.field for v in info.value.validations] == ["network.allow.0"]
    assert [v.number for v in h.admin.list_template_versions("py")] == [1]
    assert h.admin.get_template("py").active_version_id == template.active_version_id


def test_allow_list_entries_that_are_no_host_wildcard_address_or_cidr_are_refused_naming_each(
    h: Harness,
) -> None:
    allow = [
        "github.com",
        "https://github.com/org",
        "*.pypi.org",
        "files.*.org",
        "10.1.0.0/16",
        "10.1.0.1/16",
        "two words",
        "::1",
        "host:99999",
        "registry.npmjs.org:443",
    ]
    text = manifest_yaml(network={"egress": "allowlist", "allow": allow})
    error = _refused(h, text)
    assert error.status_code == 422
    assert error.message == "dockyard.yaml is invalid."
    lines = text.splitlines()
    assert [(v.field, v.detail, v.line) for v in error.validations] == [
        (
            "network.allow.1",
            "'https://github.com/org' is a URL; write the host name alone, e.g. github.com",
            lines.index("  - https://github.com/org") + 1,
        ),
        (
            "network.allow.3",
            "'files.*.org': a wildcard is written *.domain (e.g. *.pypi.org) and matches the names below it",
            lines.index("  - files.*.org") + 1,
        ),
        (
            "network.allow.5",
            "'10.1.0.1/16' is not an IPv4 CIDR (10.1.0.1/16 has host bits set)",
            lines.index("  - 10.1.0.1/16") + 1,
        ),
        (
            "network.allow.6",
            "'two words' contains spaces; write one host, wildcard, address or CIDR per entry",
            lines.index("  - two words") + 1,
        ),
        (
            "network.allow.7",
            "'::1' looks like an IPv6 address; workspace networks are IPv4 only",
            next(n for n, line in enumerate(lines, 1) if "::1" in line),
        ),
        (
            "network.allow.8",
            "'host:99999' has port '99999'; a port is a number from 1 to 65535",
            lines.index("  - host:99999") + 1,
        ),
    ]


def test_an_allow_list_is_accepted_and_a_rendered_entry_is_checked_too(h: Harness) -> None:
    network = {
        "egress": "allowlist",
        "allow": ["github.com", "*.pypi.org", "10.1.0.0/16", "{{ parameters.branch }}"],
    }
    template = h.template(name="fenced", network=network)
    assert template.active_version is not None
    assert template.active_version.manifest.network.allow == network["allow"]
    with pytest.raises(ApiError) as info:
        h.admin.create_workspace(
            m.CreateWorkspaceRequest(template="fenced", name="bad", parameters={"branch": "http://x.org/"})
        )
    assert info.value.status_code == 422
    assert [(v.field, v.detail) for v in info.value.validations] == [
        (
            "network.allow.3",
            "after rendering: 'http://x.org/' is a URL; write the host name alone, e.g. x.org",
        )
    ]
    assert h.admin.list_workspaces().workspaces == []


def test_apps_and_plain_egress_are_fine(h: Harness) -> None:
    apps = [{"slug": "web", "port": 8080, "command": "python3 -m http.server 8080", "share": "public"}]
    template = h.template(name="py", apps=apps, network={"egress": "none"}, lifetime={"ttl": "1h"})
    assert template.active_version is not None
    assert template.active_version.manifest.network.egress.value == "none"
    assert [(a.slug, a.port, a.share.value) for a in template.active_version.manifest.apps] == [
        ("web", 8080, "public")
    ]


@pytest.mark.parametrize(
    ("script", "detail"),
    [
        (
            "git clone {{ parameters.branch }}",
            "line 1: parameters.branch is not shell-quoted; write {{ parameters.branch | quote }}",
        ),
        (
            'echo "{{ parameters.branch }}"',
            "line 1: parameters.branch is not shell-quoted; write {{ parameters.branch | quote }}",
        ),
        (
            "set -e\n{% for b in [parameters.branch] %}echo {{ b }}{% endfor %}",
            "line 2: b is not shell-quoted; write {{ b | quote }}",
        ),
        (
            'echo "{{ parameters.branch | quote }}"',
            "line 1: parameters.branch is inside double quotes, where `| quote` does not protect it; "
            "write it as a bare word",
        ),
        (
            "cat > notes <<EOF\nbranch: {{ parameters.branch | quote }}\nEOF",
            "line 2: parameters.branch is inside a here-document, where `| quote` does not protect it; "
            "write it as a bare word",
        ),
        (
            "echo {{ parameters.branch | quote | upper }}",
            "line 1: an expression is not shell-quoted; end it with `| quote`",
        ),
        (
            "echo {{ owner.email }}",
            "line 1: owner.email is not shell-quoted; write {{ owner.email | quote }}",
        ),
    ],
)
def test_a_parameter_written_unquoted_into_a_script_is_refused(h: Harness, script: str, detail: str) -> None:
    error = _refused(h, manifest_yaml(startup_script=script))
    assert error.status_code == 422
    assert error.message == "dockyard.yaml puts parameter values into a script unquoted."
    assert [(v.field, v.detail) for v in error.validations] == [("startup_script", detail)]


def test_quoted_and_dockyard_checked_values_are_accepted_in_scripts(h: Harness) -> None:
    script = (
        "echo {{ parameters.branch | quote }} {{ parameters.branch | shquote }} {{ parameters.ttl_hours | int }}\n"
        "echo {{ workspace.name }} \"{{ owner.username }}\" {{ 'literal' }}\n"
        "{% if parameters.branch %}x=$(printf '%s' {{ parameters.branch | quote }}){% endif %}\n"
        "cat <<'EOF' > notes\nplain text\nEOF\ngit checkout -- {{ parameters.branch | quote }}  # a comment\n"
    )
    template = h.template(name="py", startup_script=script, shutdown_script="echo {{ workspace.id }}")
    assert template.active_version is not None


def test_a_git_url_parameter_refuses_options_and_normalizes_the_brief_s_form(h: Harness) -> None:
    h.template(
        name="py",
        parameters=[
            {"name": "repo", "type": "string", "format": "git-url", "default": ""},
            {"name": "branch", "type": "string", "format": "git-ref", "default": "main"},
        ],
        startup_script="git clone --branch {{ parameters.branch | quote }} -- {{ parameters.repo | quote }}",
        lifetime={},
    )
    with pytest.raises(ApiError) as info:
        h.admin.create_workspace(
            m.CreateWorkspaceRequest(
                template="py",
                name="evil",
                parameters={"repo": "--upload-pack=touch /tmp/pwned", "branch": "-b"},
            )
        )
    assert info.value.status_code == 422
    assert [(v.field, v.detail) for v in info.value.validations] == [
        (
            "repo",
            "'--upload-pack=touch /tmp/pwned' starts with '-' and would be read as an option, not a repository",
        ),
        ("branch", "'-b' starts with '-' and would be read as an option, not a branch"),
    ]
    assert h.admin.list_workspaces().workspaces == []
    created = h.admin.create_workspace(
        m.CreateWorkspaceRequest(template="py", name="ok", parameters={"repo": "github.com/org/backend"})
    )
    assert created.parameters["repo"] == "https://github.com/org/backend"


def test_format_needs_a_string_parameter(h: Harness) -> None:
    error = _refused(
        h, manifest_yaml(parameters=[{"name": "n", "type": "number", "default": 1, "format": "git-url"}])
    )
    assert [(v.field, v.detail) for v in error.validations] == [
        ("parameters.0", "format applies only to string parameters")
    ]
