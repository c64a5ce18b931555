"""A corpus of secrets that must never be shown, and ordinary text that must survive."""

from __future__ import annotations

import pytest

from orchestrator.redaction import MASK, Redactor

SECRETS = [
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("key: ASIAY34FZKBOKMUTVV7A in use", "ASIAY34FZKBOKMUTVV7A"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("export AWS_SECRET_ACCESS_KEY=je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
     "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"),
    ("creds wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY alone", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ('db_password = "hunter2-hunter2"', "hunter2-hunter2"),
    ("password=plainpass123 next", "plainpass123"),
    ("PASSWORD: 'quoted pass'", "quoted pass"),
    ('"client_secret": "cs-998877665544"', "cs-998877665544"),
    ("github_token => ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9.payload.sig"),
    ("api_key=sk_live_51Habcdef", "sk_live_51Habcdef"),
    ("url = https://admin:s3cr3tpw@db.example.com:5432/app", "s3cr3tpw"),
    ("redis://:redispass99@127.0.0.1:6379/0", "redispass99"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc\n-----END RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEA7"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n-----END OPENSSH PRIVATE KEY-----",
     "b3BlbnNzaC1rZXktdjEAAAA"),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B (cut off", "MIIEvQIBADANBgkqhkiG9w0B"),
    ('{"private_key": "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIBk\\n-----END EC PRIVATE KEY-----\\n"}',
     "MHcCAQEEIBk"),
    ("Error: tfotest_thing failed; content was {\"db_password\":\"Pa55-in-Tags\"}", "Pa55-in-Tags"),
    ("secret_token: abcdef123456", "abcdef123456"),
]


@pytest.mark.parametrize("text, secret", SECRETS)
def test_secret_is_masked(text: str, secret: str) -> None:
    out = Redactor().redact(text)
    assert secret not in out
    assert MASK in out


def test_sensitive_variable_values_are_masked_everywhere() -> None:
    r = Redactor()
    r.add_sensitive_variables({"api_token": "tok-Abc-12345", "nested": {"x": "deep-secret-1"}, "plain": "visible"},
                              ["api_token", "nested"])
    out = r.redact("value tok-Abc-12345 and deep-secret-1 but visible stays; json \"tok-Abc-12345\"")
    assert "tok-Abc-12345" not in out and "deep-secret-1" not in out
    assert "visible stays" in out


def test_multiline_sensitive_value_is_masked_line_by_line() -> None:
    r = Redactor(["-----BEGIN CERT-----\nline-of-secret-material\n-----END CERT-----"])
    assert "line-of-secret-material" not in r.redact("got: line-of-secret-material\n")


@pytest.mark.parametrize("text", [
    'tfotest_thing.bucket["raw"]: Creation complete after 0s [id=s3.acct-a.us-west-2.data-lake.raw]',
    "Plan: 2 to add, 1 to change, 1 to destroy.",
    '+ secret        = (sensitive value)',
    "commit 3f786850e387550fdab836ed7e6dc881de23001b",
    "~ instance_count = 3 -> 4",
    "arn:aws:iam::123456789012:role/deployer",
    "s3/acct-a/us-west-2/data-lake/terraform.tfstate",
])
def test_ordinary_text_survives(text: str) -> None:
    assert Redactor().redact(text) == text


def test_short_literals_are_not_masked_everywhere() -> None:
    # a three-character "secret" would mask ordinary words all over the output
    assert Redactor(["abc"]).redact("abc def") == "abc def"


@pytest.mark.parametrize("text, secret", [
    ('{\\"db_password\\":\\"Pa55-in-Tags-7781\\",\\"team\\":\\"data\\"}', "Pa55-in-Tags-7781"),
    ('content = "{\\\\\\"api_key\\\\\\":\\\\\\"k-123456789\\\\\\"}"', "k-123456789"),
])
def test_escaped_json_inside_json_is_masked(text: str, secret: str) -> None:
    out = Redactor().redact(text)
    assert secret not in out
    assert '\\"team\\":\\"data\\"' in out or "api_key" in out


@pytest.mark.timeout(30)
def test_long_unbroken_runs_do_not_hang_the_redactor() -> None:
    # A base64 blob or a giant identifier in terraform output once took quadratic time.
    blob = "x" * 300_000 + " password = hunter2hunter2 " + "A1b2" * 50_000
    out = Redactor().redact(blob)
    assert "hunter2hunter2" not in out and out.startswith("x" * 1000)


@pytest.mark.parametrize("text, secret", [
    # Terraform word-wraps diagnostics: the PEM header may break anywhere between its words
    ("content: -----BEGIN\nRSA PRIVATE KEY-----\\nMIIEowIBAAKCAQEA7v3Xq9\\n-----END\nRSA PRIVATE KEY-----",
     "MIIEowIBAAKCAQEA7v3Xq9"),
    ("-----BEGIN RSA\nPRIVATE KEY-----\nMIIEowIBAAKCAQEA7v3Xq9", "MIIEowIBAAKCAQEA7v3Xq9"),
    # the same output inside JSON: its newlines are backslash-n
    ('"header": "Bearer\\neyJhbGciOiJIUzI1NiJ9.payload9"', "eyJhbGciOiJIUzI1NiJ9.payload9"),
])
def test_wrapped_and_escaped_secrets_are_masked(text: str, secret: str) -> None:
    assert secret not in Redactor().redact(text)


def test_redact_tree_masks_each_string_before_serialization() -> None:
    tree = {"steps": [{"output": "header = Bearer\neyJhbGciOiJIUzI1NiJ9.payload9", "exit_code": 1}], "n": 3}
    out = Redactor().redact_tree(tree)
    assert "payload9" not in out["steps"][0]["output"]
    assert out["steps"][0]["exit_code"] == 1 and out["n"] == 3
