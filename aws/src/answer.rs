//! Reading AWS error answers the same way for every service client.

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;

/// Error codes AWS gives for credentials it does not accept (unknown, wrong secret, expired).
pub const CREDENTIAL_CODES: [&str; 8] = [
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "IncompleteSignature",
    "ExpiredToken",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
];

/// Error codes of throttling.
pub const THROTTLING_CODES: [&str; 5] = [
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
];

/// One AWS error answer: code, message and HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The error code (`AccessDeniedException`), or `HTTP <status>` when there is none.
    pub code: String,
    /// The service's message, possibly empty.
    pub message: String,
    /// The HTTP status, 0 when there was no response.
    pub status: u16,
}

impl Answer {
    /// The answer of a failed call. The SDKs read the code of JSON APIs from the JSON body;
    /// when a body is XML instead (IAM refusals of some endpoints and emulators), its
    /// `<Code>` and `<Message>` are read.
    pub fn of<E: ProvideErrorMetadata>(e: &SdkError<E, Response>) -> Self {
        let (status, body) = match e.raw_response() {
            Some(r) => (
                r.status().as_u16(),
                r.body()
                    .bytes()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
                    .unwrap_or_default(),
            ),
            None => (0, String::new()),
        };
        let message = e
            .message()
            .map(str::to_owned)
            .or_else(|| xml_tag(&body, "Message"))
            .unwrap_or_default();
        let code = e
            .code()
            .map(str::to_owned)
            .or_else(|| xml_tag(&body, "Code"))
            .unwrap_or_else(|| format!("HTTP {status}"));
        Self {
            code,
            message,
            status,
        }
    }

    /// `AWS: <code>: <message>`, for the end of messages.
    pub fn says(&self) -> String {
        if self.message.is_empty() {
            format!("AWS: {}", self.code)
        } else {
            format!("AWS: {}: {}", self.code, self.message)
        }
    }

    /// An IAM refusal: `AccessDenied[Exception]`, or a 403 saying "not authorized".
    pub fn is_access_denied(&self) -> bool {
        matches!(self.code.as_str(), "AccessDenied" | "AccessDeniedException")
            || (self.status == 403 && self.message.contains("not authorized"))
    }

    /// Credentials AWS does not accept.
    pub fn is_bad_credentials(&self) -> bool {
        CREDENTIAL_CODES.contains(&self.code.as_str())
    }

    /// Throttling (by code or HTTP 429).
    pub fn is_throttling(&self) -> bool {
        THROTTLING_CODES.contains(&self.code.as_str()) || self.status == 429
    }
}

/// Text of the first `<tag>…</tag>` of an XML error body (at most 512 characters).
pub fn xml_tag(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    let v = xml[start..end].trim();
    (!v.is_empty()).then(|| v.chars().take(512).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_errors_are_read() {
        let body = "<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: x is \
                    not authorized to perform: acm-pca:IssueCertificate</Message></Error></Errors>\
                    </ErrorResponse>";
        assert_eq!(xml_tag(body, "Code").as_deref(), Some("AccessDenied"));
        assert!(xml_tag(body, "Message")
            .unwrap()
            .contains("acm-pca:IssueCertificate"));
        assert_eq!(xml_tag("{}", "Code"), None);
        let a = Answer {
            code: "HTTP 403".into(),
            message: "User: x is not authorized to perform: y".into(),
            status: 403,
        };
        assert!(a.is_access_denied());
        assert!(!a.is_throttling());
    }
}
