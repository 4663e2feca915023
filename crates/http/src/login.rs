//! The forms-login page: plain HTML, no JavaScript needed.

use crate::form::html_escape;

/// The login page. `csrf` goes in a hidden field (double-submitted with the CSRF cookie);
/// `error` is shown above the form.
pub fn page(node: &str, return_to: &str, csrf: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f5f7; margin: 0; }}
main {{ max-width: 22rem; margin: 12vh auto; background: #fff; padding: 2rem; border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.15); }}
h1 {{ font-size: 1.4rem; margin-top: 0; }}
label {{ display: block; margin: 1rem 0 .3rem; }}
input[type=text], input[type=password] {{ width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }}
button {{ margin-top: 1.5rem; width: 100%; padding: .6rem; font-size: 1rem; }}
.error {{ color: #a00; }}
footer {{ color: #888; font-size: .8rem; margin-top: 1.5rem; }}
</style>
</head>
<body>
<main>
<h1>Sign in</h1>
{error}
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="return" value="{return_to}">
<label for="user">E-mail address</label>
<input type="text" id="user" name="user" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
<footer>{node}</footer>
</main>
</body>
</html>
"#,
        csrf = html_escape(csrf),
        return_to = html_escape(return_to),
        node = html_escape(node),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let html = page("cas1", "/x\"><script>", "tok", Some("<b>no</b>"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;b&gt;no&lt;/b&gt;"));
        assert!(html.contains("name=\"csrf\" value=\"tok\""));
    }
}
