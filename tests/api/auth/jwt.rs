//! JWT bearer tokens: HS256, RS256 and ES256, JWKS files, rate limits per subject, and the
//! principal in the binary's logs.
//!
//! Tokens and key pairs are made at test time by PyJWT and cryptography (tests/auth/mint.py, run
//! with `.venv/bin/python`; `pip install -r tests/auth/requirements.txt`), so that no private key
//! is committed and the tokens come from an implementation nobody here wrote. Hence behind the
//! `external-tools` feature: scripts/test.sh makes the venv.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

/// What a case expects: 200; 403 naming the scope; 401 `invalid_token` counted as one of the reasons.
#[derive(Debug)]
enum Want {
    Accept,
    Forbid(&'static str),
    Refuse(&'static [&'static str]),
}

impl Ctx {
    /// Sends the request and judges the answer against `want`; `Err` says how it differs
    /// (so that a table of cases can report every mismatch at once).
    async fn judged(&self, rb: RequestBuilder, what: &str, want: &Want) -> Result<(), String> {
        let (answer, delta) = self.counted_delta(rb).await;
        let (status, reasons): (u16, &[&str]) = match want {
            Want::Accept => (200, &[]),
            Want::Forbid(_) => (403, &["forbidden"]),
            Want::Refuse(r) => (401, r),
        };
        if answer.status != status {
            return Err(format!("{what}: {}: want {status}, got {} {}", answer.what, answer.status, answer.text));
        }
        counts(&answer, &delta, reasons).map_err(|e| format!("{what}: {e}"))?;
        match want {
            Want::Accept => {}
            Want::Forbid(scope) => answer.forbidden(scope),
            Want::Refuse(_) => {
                answer.unauthorized(true);
            }
        }
        Ok(())
    }
}

/// Prediction log lines by request id: the principal each names.
fn principals(lines: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in lines {
        let id = line["request_id"].as_str().unwrap().to_owned();
        out.entry(id).or_default().push(line.get("principal").cloned().unwrap_or(Value::Null));
    }
    out
}

/// A path as a quoted TOML string.
fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test.sh, or python3 -m venv .venv && .venv/bin/pip install -r tests/auth/requirements.txt",
        python.display()
    );
    python
}

fn mint_script() -> PathBuf {
    repo().join("tests/auth/mint.py")
}

/// Fresh key pairs (rsa1, rsa2, ec1, ec2: `NAME.pem` private, `NAME.pub.pem` public) and
/// `jwks.json` (rsa-1, rsa-2, ec-1) and `jwks_single.json` (ec2, no kid) in a new folder.
fn mint_keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(python()).arg(mint_script()).arg("keys").arg(dir.path()).output().unwrap();
    assert!(
        out.status.success(),
        "mint.py keys failed (pip install -r tests/auth/requirements.txt?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Tokens for the specs (see tests/auth/mint.py), in order.
fn mint(specs: &[Value]) -> Vec<String> {
    let mut child = std::process::Command::new(python())
        .arg(mint_script())
        .arg("tokens")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(Value::from(specs.to_vec()).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mint.py tokens failed (pip install -r tests/auth/requirements.txt?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tokens.len(), specs.len());
    tokens
}

/// One token; `rel` holds claims relative to now (seconds), e.g. `{"exp": 300}`.
fn spec(alg: &str, signer: Value, claims: Value, rel: Value) -> Value {
    let mut spec = json!({"alg": alg, "claims": claims, "rel": rel});
    for (k, v) in signer.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// A request id naming a case.
fn slug(what: &str) -> String {
    what.chars().map(|c| if c.is_ascii_alphanumeric() || "._:-".contains(c) { c } else { '_' }).take(128).collect()
}

fn with(mut spec: Value, field: &str, value: Value) -> Value {
    spec[field] = value;
    spec
}

const ISSUER: &str = "https://idp.test/";

#[tokio::test]
async fn hs256_tokens_are_checked_claim_by_claim() {
    let secret = format!("hs256-secret-{}", uuid::Uuid::new_v4().simple());
    let hs = json!({"secret": secret});
    let base = json!({"sub": "alice", "iss": ISSUER, "aud": "inferd", "scope": "predict read"});
    let claims = |change: Value| {
        let mut c = base.clone();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let ok = |change: Value| spec("HS256", hs.clone(), claims(change), json!({"exp": 300}));
    let keys = mint_keys();
    let rsa1 = json!({"key": keys.path().join("rsa1.pem")});

    // (what, spec, on /predict, on /models)
    use Want::*;
    let cases: Vec<(&str, Value, Want, Want)> = vec![
        ("valid", ok(json!({})), Accept, Accept),
        ("scope read only", ok(json!({"scope": "read"})), Forbid("predict"), Accept),
        ("scp list", ok(json!({"scope": null, "scp": ["predict"]})), Accept, Forbid("read")),
        ("scp string", ok(json!({"scope": null, "scp": "read predict"})), Accept, Accept),
        ("role analyst", ok(json!({"scope": null, "groups": ["analyst"]})), Accept, Accept),
        ("role viewer", ok(json!({"scope": null, "groups": ["viewer"]})), Forbid("predict"), Accept),
        (
            "roles claim not configured",
            ok(json!({"scope": null, "roles": ["analyst"]})),
            Forbid("predict"),
            Forbid("read"),
        ),
        ("unknown names ignored", ok(json!({"scope": "write predict", "groups": ["ghost"]})), Accept, Forbid("read")),
        ("aud list", ok(json!({"aud": ["other", "inferd"]})), Accept, Accept),
        ("wrong aud", ok(json!({"aud": "other"})), Refuse(&["wrong_audience"]), Refuse(&["wrong_audience"])),
        (
            "missing aud",
            ok(json!({"aud": null})),
            Refuse(&["wrong_audience", "invalid_token"]),
            Refuse(&["wrong_audience", "invalid_token"]),
        ),
        ("wrong iss", ok(json!({"iss": "https://evil.test/"})), Refuse(&["wrong_issuer"]), Refuse(&["wrong_issuer"])),
        (
            "missing iss",
            ok(json!({"iss": null})),
            Refuse(&["wrong_issuer", "invalid_token"]),
            Refuse(&["wrong_issuer", "invalid_token"]),
        ),
        (
            "missing sub",
            ok(json!({"sub": null})),
            Refuse(&["invalid_token", "malformed"]),
            Refuse(&["invalid_token", "malformed"]),
        ),
        (
            "tampered",
            with(ok(json!({"scope": "read"})), "tamper", json!({"scope": "predict read admin"})),
            Refuse(&["invalid_signature"]),
            Refuse(&["invalid_signature"]),
        ),
        (
            "tampered sub",
            with(ok(json!({})), "tamper", json!({"sub": "mallory"})),
            Refuse(&["invalid_signature"]),
            Refuse(&["invalid_signature"]),
        ),
        (
            "wrong secret",
            spec("HS256", json!({"secret": "not-the-secret-not-the-secret-0123"}), base.clone(), json!({"exp": 300})),
            Refuse(&["invalid_signature"]),
            Refuse(&["invalid_signature"]),
        ),
        // Leeway 20 s: past by 45 s is expired (a verifier's default 60 s leeway would let it through).
        (
            "expired",
            spec("HS256", hs.clone(), base.clone(), json!({"exp": -45})),
            Refuse(&["expired"]),
            Refuse(&["expired"]),
        ),
        ("exp within leeway", spec("HS256", hs.clone(), base.clone(), json!({"exp": -5})), Accept, Accept),
        (
            "nbf ahead",
            spec("HS256", hs.clone(), base.clone(), json!({"exp": 300, "nbf": 45})),
            Refuse(&["not_yet_valid"]),
            Refuse(&["not_yet_valid"]),
        ),
        ("nbf within leeway", spec("HS256", hs.clone(), base.clone(), json!({"exp": 300, "nbf": 5})), Accept, Accept),
        (
            "missing exp",
            spec("HS256", hs.clone(), base.clone(), json!({})),
            Refuse(&["invalid_token", "malformed"]),
            Refuse(&["invalid_token", "malformed"]),
        ),
        (
            "alg none",
            spec("none", json!({}), base.clone(), json!({"exp": 300})),
            Refuse(&["invalid_token", "malformed", "invalid_signature", "unknown_key"]),
            Refuse(&["invalid_token", "malformed", "invalid_signature", "unknown_key"]),
        ),
        (
            "alg none, signed",
            with(
                spec("none", json!({}), base.clone(), json!({"exp": 300})),
                "signature",
                json!("c2lnbmF0dXJlc2lnbmF0dXJl"),
            ),
            Refuse(&["invalid_token", "malformed", "invalid_signature"]),
            Refuse(&["invalid_token", "malformed", "invalid_signature"]),
        ),
        // RFC 7515 §4.1.6: a critical extension the server does not understand (none) refuses
        // the token, however well it is signed.
        (
            "critical extension",
            with(ok(json!({})), "headers", json!({"crit": ["x"], "x": "y"})),
            Refuse(&["invalid_token"]),
            Refuse(&["invalid_token"]),
        ),
        ("an extension not marked critical", with(ok(json!({})), "headers", json!({"x": "y"})), Accept, Accept),
        (
            "RS256 against HS256 only",
            spec("RS256", rsa1.clone(), base.clone(), json!({"exp": 300})),
            Refuse(&["invalid_token", "invalid_signature", "malformed"]),
            Refuse(&["invalid_token", "invalid_signature", "malformed"]),
        ),
    ];
    let specs: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let tokens = mint(&specs);

    let ops = new_key();
    let app_key = new_key();
    let mut config = config_with(&format!(
        "[auth.jwt]\nissuer = \"{ISSUER}\"\naudience = \"inferd\"\nleeway_seconds = 20\nroles_claim = \"groups\"\n\
         roles = {{ analyst = [\"predict\", \"read\"], viewer = [\"read\"] }}\n"
    ));
    config.auth.jwt_secret = Some(Secret(secret.clone()));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    config.auth.api_keys.push(api_key("app", &app_key, &["predict", "read"]));
    let mut ctx = Ctx::spawn(config, Some(&ops), &[&secret, &ops, &app_key]).await;
    for token in &tokens {
        ctx.secret(token);
    }
    let mut served = Vec::new();
    let mut wrong = Vec::new();
    for ((what, _, predict, read), token) in cases.iter().zip(&tokens) {
        for (method, path, want) in [("POST", "/predict", predict), ("GET", "/models", read)] {
            let id = format!("hs-{}-{method}", slug(what));
            let rb = ctx.request(method, path, Cred::Bearer(token)).header("x-request-id", &id);
            if let Err(e) = ctx.judged(rb, what, want).await {
                wrong.push(e);
            } else if matches!(want, Accept) && method == "POST" {
                served.push(id);
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} checks went wrong:\n{}", wrong.len(), 2 * cases.len(), wrong.join("\n"));
    // An API key still works beside JWT; a token in x-api-key is looked up as a key.
    let rb =
        ctx.request("POST", "/v2/models/house_price/infer", Cred::Bearer(&app_key)).header("x-request-id", "hs-key");
    ctx.counted(rb, &[]).await.ok();
    ctx.check("GET", "/models", Cred::Key(&tokens[0]), &["unknown_key"]).await.unauthorized(true);
    // A malformed token-shaped credential.
    ctx.secret("eyJub3QiOiJqc29u.eyJub3QiOiJqc29u.c2lnbmF0dXJlc2lnbmF0dXJl");
    ctx.check(
        "GET",
        "/models",
        Cred::Bearer("eyJub3QiOiJqc29u.eyJub3QiOiJqc29u.c2lnbmF0dXJlc2lnbmF0dXJl"),
        &["malformed", "invalid_token"],
    )
    .await
    .unauthorized(true);
    ctx.check("POST", "/v2/models/house_price/infer", Cred::Bearer(&tokens[1]), &["forbidden"])
        .await
        .forbidden("predict");

    let lines = ctx.stop().await;
    let by_id = principals(&lines);
    for id in &served {
        assert_eq!(by_id.get(id), Some(&vec![json!("alice")]), "{id}: the token's sub is the principal: {by_id:?}");
    }
    assert_eq!(by_id.get("hs-key"), Some(&vec![json!("app")]), "{by_id:?}");
    assert_eq!(by_id.len(), served.len() + 1, "only accepted predictions are logged: {by_id:?}");
}

/// Runs each token against `/models` (read) and `/predict` (predict), with the same verdict on
/// both; reports every mismatch.
async fn expect_tokens(ctx: &Ctx, cases: &[(&str, Value, Want)], tokens: &[String]) {
    let mut wrong = Vec::new();
    for ((what, _, want), token) in cases.iter().zip(tokens) {
        for (method, path) in [("GET", "/models"), ("POST", "/predict")] {
            let rb = ctx.request(method, path, Cred::Bearer(token)).header("x-request-id", slug(what));
            if let Err(e) = ctx.judged(rb, what, want).await {
                wrong.push(e);
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} checks went wrong:\n{}", wrong.len(), 2 * cases.len(), wrong.join("\n"));
}

#[tokio::test]
async fn rs256_with_a_public_key_refuses_algorithm_confusion() {
    let keys = mint_keys();
    let k = |name: &str| json!({"key": keys.path().join(name)});
    let claims = json!({"sub": "rs-user", "scope": "predict read", "aud": "anyone"});
    let exp = json!({"exp": 300});
    let public = keys.path().join("rsa1.pub.pem");
    const BAD: &[&str] = &["invalid_signature", "invalid_token", "malformed"];
    let cases: Vec<(&str, Value, Want)> = vec![
        (
            "RS256, no audience configured so aud is not checked",
            spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()),
            Want::Accept,
        ),
        (
            "RS256 with a kid (a single public key ignores it)",
            with(spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), "headers", json!({"kid": "x"})),
            Want::Accept,
        ),
        (
            "roles claim by default",
            spec("RS256", k("rsa1.pem"), json!({"sub": "r", "roles": ["analyst", "viewer"]}), exp.clone()),
            Want::Accept,
        ),
        (
            "another RSA key",
            spec("RS256", k("rsa2.pem"), claims.clone(), exp.clone()),
            Want::Refuse(&["invalid_signature"]),
        ),
        ("expired", spec("RS256", k("rsa1.pem"), claims.clone(), json!({"exp": -100})), Want::Refuse(&["expired"])),
        (
            "a critical extension",
            with(
                spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()),
                "headers",
                json!({"crit": ["b64"], "b64": "x"}),
            ),
            Want::Refuse(&["invalid_token"]),
        ),
        (
            "HS256 keyed with the public key PEM",
            spec("HS256", json!({"hmac_key_file": public}), claims.clone(), exp.clone()),
            Want::Refuse(BAD),
        ),
        (
            "HS256 with some secret, none configured",
            spec("HS256", json!({"secret": "some-secret-some-secret-some-secret"}), claims.clone(), exp.clone()),
            Want::Refuse(BAD),
        ),
        ("ES256 against an RSA key", spec("ES256", k("ec1.pem"), claims.clone(), exp.clone()), Want::Refuse(BAD)),
        (
            "alg none",
            spec("none", json!({}), claims.clone(), exp.clone()),
            Want::Refuse(&["invalid_signature", "invalid_token", "malformed", "unknown_key"]),
        ),
    ];
    let specs: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let tokens = mint(&specs);
    let ops = new_key();
    let mut config = config_with(&format!(
        "[auth.jwt]\npublic_key = {}\nroles = {{ analyst = [\"predict\"], viewer = [\"read\"] }}\n",
        toml_path(&public)
    ));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    assert!(config.auth.jwt_secret.is_none());
    let mut ctx = Ctx::spawn(config, Some(&ops), &[&ops]).await;
    tokens.iter().for_each(|t| ctx.secret(t));
    expect_tokens(&ctx, &cases, &tokens).await;
    ctx.stop().await;
}

#[tokio::test]
async fn es256_with_a_public_key_and_a_rate_limit_per_subject() {
    let keys = mint_keys();
    let ec1 = json!({"key": keys.path().join("ec1.pem")});
    let claims = |sub: &str| json!({"sub": sub, "scope": "predict read"});
    let tokens = mint(&[
        spec("ES256", ec1.clone(), claims("es-once"), json!({"exp": 300})),
        spec("ES256", json!({"key": keys.path().join("ec2.pem")}), claims("es-once"), json!({"exp": 300})),
        spec("RS256", json!({"key": keys.path().join("rsa1.pem")}), claims("es-once"), json!({"exp": 300})),
        spec("ES256", ec1.clone(), claims("es-burst"), json!({"exp": 300})),
        // Another token of the same subject shares its bucket.
        spec("ES256", ec1.clone(), claims("es-burst"), json!({"exp": 200})),
        spec("ES256", ec1.clone(), claims("es-calm"), json!({"exp": 300})),
    ]);
    let ops = new_key();
    let mut config = config_with(&format!(
        "[auth.jwt]\npublic_key = {}\nrate_limit = {{ per_second = 1.0, burst = 2 }}\n",
        toml_path(&keys.path().join("ec1.pub.pem"))
    ));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    let mut ctx = Ctx::spawn(config, Some(&ops), &[&ops]).await;
    tokens.iter().for_each(|t| ctx.secret(t));
    ctx.check("POST", "/predict", Cred::Bearer(&tokens[0]), &[]).await.ok();
    ctx.check("GET", "/models", Cred::Bearer(&tokens[1]), &["invalid_signature"]).await.unauthorized(true);
    ctx.check("GET", "/models", Cred::Bearer(&tokens[2]), &["invalid_signature", "invalid_token", "malformed"])
        .await
        .unauthorized(true);

    // Timed by the bucket from here until the 429s are seen: few requests.
    ctx.call("GET", "/models", Cred::Bearer(&tokens[3])).await.ok();
    ctx.call("POST", "/predict", Cred::Bearer(&tokens[3])).await.ok();
    let retry = ctx.check("GET", "/models", Cred::Bearer(&tokens[4]), &["rate_limited"]).await.rate_limited();
    ctx.call("POST", "/v2/models/house_price/infer", Cred::Bearer(&tokens[3])).await.rate_limited();
    // Another subject has its own bucket: its whole burst.
    for _ in 0..2 {
        ctx.check("GET", "/models", Cred::Bearer(&tokens[5]), &[]).await.ok();
    }
    // Refilled after Retry-After: the window itself is under test, so it is waited out.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    ctx.check("GET", "/models", Cred::Bearer(&tokens[3]), &[]).await.ok();
    ctx.stop().await;
}

#[tokio::test]
async fn a_jwks_file_picks_the_key_by_kid_beside_the_hs256_secret() {
    let keys = mint_keys();
    let k = |name: &str| json!({"key": keys.path().join(name)});
    let claims = json!({"sub": "jwks-user", "scope": "predict read"});
    let exp = json!({"exp": 300});
    let kid = |s: Value, kid: &str| with(s, "headers", json!({"kid": kid}));
    let secret = format!("hs256-secret-{}", uuid::Uuid::new_v4().simple());
    const BAD: &[&str] = &["invalid_signature", "invalid_token", "malformed"];
    let cases: Vec<(&str, Value, Want)> = vec![
        ("rsa-1", kid(spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), "rsa-1"), Want::Accept),
        ("rsa-2", kid(spec("RS256", k("rsa2.pem"), claims.clone(), exp.clone()), "rsa-2"), Want::Accept),
        ("ec-1", kid(spec("ES256", k("ec1.pem"), claims.clone(), exp.clone()), "ec-1"), Want::Accept),
        (
            "HS256 with the secret, whatever its kid",
            kid(spec("HS256", json!({"secret": secret}), claims.clone(), exp.clone()), "rsa-1"),
            Want::Accept,
        ),
        (
            "rsa1's token under rsa-2's kid",
            kid(spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), "rsa-2"),
            Want::Refuse(&["invalid_signature"]),
        ),
        (
            "ec2's token under ec-1's kid",
            kid(spec("ES256", k("ec2.pem"), claims.clone(), exp.clone()), "ec-1"),
            Want::Refuse(&["invalid_signature"]),
        ),
        ("unknown kid", kid(spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), "nope"), Want::Refuse(BAD)),
        ("no kid among several keys", spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), Want::Refuse(BAD)),
        (
            "RS256 under an EC key's kid",
            kid(spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), "ec-1"),
            Want::Refuse(BAD),
        ),
        (
            "HS256 keyed with rsa-1's PEM",
            kid(
                spec("HS256", json!({"hmac_key_file": keys.path().join("rsa1.pub.pem")}), claims.clone(), exp.clone()),
                "rsa-1",
            ),
            Want::Refuse(BAD),
        ),
    ];
    let specs: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let tokens = mint(&specs);
    let ops = new_key();
    let mut config = config_with(&format!("[auth.jwt]\njwks_file = {}\n", toml_path(&keys.path().join("jwks.json"))));
    config.auth.jwt_secret = Some(Secret(secret.clone()));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    let mut ctx = Ctx::spawn(config, Some(&ops), &[&ops, &secret]).await;
    tokens.iter().for_each(|t| ctx.secret(t));
    expect_tokens(&ctx, &cases, &tokens).await;
    ctx.stop().await;
}

#[tokio::test]
async fn a_jwks_file_with_one_key_needs_no_kid() {
    let keys = mint_keys();
    let claims = json!({"sub": "single", "scp": ["predict", "read"]});
    let cases: Vec<(&str, Value, Want)> = vec![
        (
            "the only key",
            spec("ES256", json!({"key": keys.path().join("ec2.pem")}), claims.clone(), json!({"exp": 300})),
            Want::Accept,
        ),
        (
            "another EC key",
            spec("ES256", json!({"key": keys.path().join("ec1.pem")}), claims.clone(), json!({"exp": 300})),
            Want::Refuse(&["invalid_signature"]),
        ),
    ];
    let specs: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let tokens = mint(&specs);
    let ops = new_key();
    let mut config =
        config_with(&format!("[auth.jwt]\njwks_file = {}\n", toml_path(&keys.path().join("jwks_single.json"))));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    let mut ctx = Ctx::spawn(config, Some(&ops), &[&ops]).await;
    tokens.iter().for_each(|t| ctx.secret(t));
    expect_tokens(&ctx, &cases, &tokens).await;
    ctx.stop().await;
}

#[tokio::test]
async fn the_binary_logs_the_principal_and_never_the_credential() {
    let key = new_key();
    let ops_key = new_key();
    let wrong_key = new_key();
    let secret = format!("hs256-secret-{}", uuid::Uuid::new_v4().simple());
    let keys = format!("app:predict+read:{},ops:metrics:{}", sha256_hex(&key), sha256_hex(&ops_key));
    let claims = json!({"sub": "svc-7", "scope": "predict read"});
    let tokens = mint(&[
        spec("HS256", json!({"secret": secret}), claims.clone(), json!({"exp": 300})),
        spec("HS256", json!({"secret": "wrong-secret-wrong-secret-wrong-secret"}), claims.clone(), json!({"exp": 300})),
        spec("HS256", json!({"secret": secret}), claims.clone(), json!({"exp": -400})),
    ]);
    let basic = "d2ViLWFwcDpzM2NyM3QtcGFzc3dvcmQ=";
    let server = Proc::start(&[], &[("INFERD_API_KEYS", &keys), ("INFERD_JWT_SECRET", &secret)]);
    let client = reqwest::Client::new();
    let predict = json!({"instances": [schema_example("house_price")]});
    let v2 = house_tensors(&[schema_example("house_price")]);
    let requests: Vec<(&str, RequestBuilder, u16)> = vec![
        ("log-key", client.post(server.url("/predict")).bearer_auth(&key).json(&predict), 200),
        ("log-xkey", client.get(server.url("/models")).header("x-api-key", &key), 200),
        ("log-jwt", client.post(server.url("/v2/models/house_price/infer")).bearer_auth(&tokens[0]).json(&v2), 200),
        ("log-ops", client.get(server.url("/metrics")).bearer_auth(&ops_key), 200),
        ("log-wrong-key", client.post(server.url("/predict")).bearer_auth(&wrong_key).json(&predict), 401),
        ("log-wrong-secret", client.get(server.url("/models")).bearer_auth(&tokens[1]), 401),
        ("log-expired", client.post(server.url("/predict")).bearer_auth(&tokens[2]).json(&predict), 401),
        ("log-basic", client.get(server.url("/models")).header("authorization", format!("Basic {basic}")), 401),
        ("log-none", client.post(server.url("/predict")).json(&predict), 401),
        ("log-scope", client.post(server.url("/predict")).bearer_auth(&ops_key).json(&predict), 403),
    ];
    let mut bodies = Vec::new();
    for (id, rb, status) in requests {
        let response = rb.header("x-request-id", id).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{id}");
        let headers = format!("{:?}", response.headers());
        bodies.push(format!("{headers}\n{}", response.text().await.unwrap()));
    }
    let (lines, prediction_log) = server.stop();

    let secrets: Vec<&str> =
        [key.as_str(), ops_key.as_str(), wrong_key.as_str(), secret.as_str(), basic, "s3cr3t-password"]
            .into_iter()
            .chain(tokens.iter().map(String::as_str))
            .chain(tokens.iter().map(|t| t.rsplit_once('.').unwrap().1))
            .collect();
    let mut predlog = String::new();
    for entry in std::fs::read_dir(prediction_log.path()).unwrap() {
        predlog += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
    }
    for secret in &secrets {
        for line in lines.iter().chain(&bodies) {
            assert!(!line.contains(secret), "a credential was logged or echoed: {line}");
        }
        assert!(!predlog.contains(secret), "a credential is in the prediction log: {predlog}");
    }
    let lines = parsed(&lines);
    assert!(!lines.iter().any(|l| l["message"] == "authentication is off: every route is open"), "auth is on");
    let access = |id: &str| -> Value {
        let found: Vec<&Value> =
            lines.iter().filter(|l| l["message"] == "request" && l["span"]["request_id"] == id).collect();
        assert_eq!(found.len(), 1, "one access line for {id}: {lines:?}");
        found[0].clone()
    };
    let accepted = [("log-key", "app", "key"), ("log-xkey", "app", "key"), ("log-jwt", "svc-7", "jwt")];
    for (id, principal, kind) in accepted {
        let line = access(id);
        assert_eq!(line["principal"], principal, "{id}: {line}");
        assert_eq!(line["auth"], kind, "the kind of credential tells a key from a subject: {line}");
        assert_eq!(line["status"], 200, "{line}");
    }
    // A successful scrape is not access-logged (`logging.log_probes` is off).
    assert!(!lines.iter().any(|l| l["message"] == "request" && l["span"]["request_id"] == "log-ops"), "{lines:?}");
    for id in ["log-wrong-key", "log-wrong-secret", "log-expired", "log-basic", "log-none"] {
        let line = access(id);
        assert_eq!(line["status"], 401, "{line}");
        assert!(line.get("principal").is_none_or(Value::is_null), "{id}: nobody was accepted: {line}");
    }
    let predictions: Vec<Value> = predlog.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_id = principals(&predictions);
    assert_eq!(by_id.get("log-key"), Some(&vec![json!("app")]), "{by_id:?}");
    assert_eq!(by_id.get("log-jwt"), Some(&vec![json!("svc-7")]), "{by_id:?}");
    assert_eq!(by_id.len(), 2, "{by_id:?}");
}
