//! Usage: the calls a `[usage.NAME]` monitor makes with the account's admin
//! credential (Auth Token or Main key).
//!
//! - `GET /2010-04-01/Accounts/{sid}/Usage/Records/Today.json?Category=…`:
//!   the day's cumulative figures of one category (UTC day);
//! - `GET|POST /2010-04-01/Accounts/{sid}/Usage/Triggers.json` and
//!   `DELETE …/Usage/Triggers/{Sid}.json`: the recurring Usage Triggers
//!   that call the metrics listener when a day's count passes a value.
//!
//! Reads and deletes are retried like every idempotent call
//! ([`TwilioClient`]'s module doc); a trigger create only when it provably
//! never reached Twilio (a trigger made anyway carries our friendly-name
//! prefix and is found and reconciled at the next start).

use serde_json::Value;

use super::client::Retry;
use super::{TwilioClient, TwilioError};
use crate::credential::TwilioCredential;

/// One category's figures for today, as Twilio reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageToday {
    /// Events so far today (messages, calls, verifications…).
    pub count: f64,
    /// The billed amount, in the category's usage unit.
    pub usage: f64,
    /// The price so far, in `price_unit`.
    pub price: f64,
    /// `usd`, `eur`…
    pub price_unit: String,
    /// The day the record covers (`YYYY-MM-DD`, UTC), when Twilio says.
    pub day: Option<String>,
}

/// A Usage Trigger as listed; holds nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTrigger {
    /// `UT…`.
    pub sid: String,
    /// The name given at creation.
    pub friendly_name: String,
    /// The category it watches.
    pub usage_category: String,
    /// The value at which it fires, as Twilio writes it.
    pub trigger_value: String,
    /// `count`, `usage` or `price`.
    pub trigger_by: String,
    /// `daily`, `monthly`, `yearly`, `alltime` or empty.
    pub recurring: String,
    /// Where it calls.
    pub callback_url: String,
    /// `POST` or `GET`.
    pub callback_method: String,
}

/// A trigger to create: recurring daily, by count, POSTed to `callback_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrigger {
    /// Our prefix and the category, so we find it again.
    pub friendly_name: String,
    /// The category.
    pub usage_category: String,
    /// The day's count at which it fires.
    pub trigger_value: u64,
    /// Where it calls.
    pub callback_url: String,
}

impl UsageTrigger {
    /// Whether this trigger is `want` as created (same category, value,
    /// URL, daily, by count, POST).
    pub fn is(&self, want: &NewTrigger) -> bool {
        self.friendly_name == want.friendly_name
            && self.usage_category == want.usage_category
            && self.trigger_value.parse::<f64>().ok() == Some(want.trigger_value as f64)
            && self.callback_url == want.callback_url
            && self.trigger_by == "count"
            && self.recurring == "daily"
            && self.callback_method.eq_ignore_ascii_case("POST")
    }
}

/// A number Twilio writes as a string (`"12"`, `"0.95"`) or a number.
fn figure(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Null => Some(0.0),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// `category`'s record in a Today answer; a category with no record has
/// used nothing today.
pub fn usage_today(answer: &Value, category: &str) -> Result<UsageToday, String> {
    let records = answer["usage_records"]
        .as_array()
        .ok_or("the answer has no `usage_records` list")?;
    let Some(record) = records
        .iter()
        .find(|r| r["category"].as_str() == Some(category))
    else {
        return Ok(UsageToday {
            count: 0.0,
            usage: 0.0,
            price: 0.0,
            price_unit: String::new(),
            day: None,
        });
    };
    let field = |name: &str| {
        figure(&record[name]).ok_or_else(|| format!("the record's `{name}` is not a number"))
    };
    Ok(UsageToday {
        count: field("count")?,
        usage: field("usage")?,
        price: field("price")?,
        price_unit: crate::text::cut(&text(&record["price_unit"]), 8).into_owned(),
        day: record["start_date"]
            .as_str()
            .filter(|d| d.len() == 10)
            .map(str::to_owned),
    })
}

fn trigger(v: &Value) -> Option<UsageTrigger> {
    Some(UsageTrigger {
        sid: v["sid"].as_str()?.to_owned(),
        friendly_name: text(&v["friendly_name"]),
        usage_category: text(&v["usage_category"]),
        trigger_value: match &v["trigger_value"] {
            Value::Number(n) => n.to_string(),
            other => text(other),
        },
        trigger_by: text(&v["trigger_by"]),
        recurring: text(&v["recurring"]),
        callback_url: text(&v["callback_url"]),
        callback_method: text(&v["callback_method"]),
    })
}

impl TwilioClient {
    fn usage_path(admin: &TwilioCredential, rest: &str) -> String {
        format!(
            "/2010-04-01/Accounts/{}/Usage/{rest}",
            admin.account_sid.as_str()
        )
    }

    /// Today's figures of `category` on `admin`'s account.
    pub async fn usage_today(
        &self,
        admin: &TwilioCredential,
        category: &str,
    ) -> Result<UsageToday, TwilioError> {
        let url = Self::url(
            &self.bases().api_base,
            &Self::usage_path(admin, &format!("Records/Today.json?Category={category}")),
        );
        let action = "usage read";
        let answer = self
            .send(action, admin, Retry::Idempotent, |http| http.get(&url))
            .await?;
        usage_today(&answer.0, category).map_err(|detail| TwilioError::Malformed {
            action: action.into(),
            detail,
        })
    }

    /// Every Usage Trigger on `admin`'s account (all pages).
    pub async fn list_usage_triggers(
        &self,
        admin: &TwilioCredential,
    ) -> Result<Vec<UsageTrigger>, TwilioError> {
        let path = Self::usage_path(admin, "Triggers.json?PageSize=1000");
        self.list_2010(
            "usage trigger list",
            admin,
            &path,
            "usage triggers",
            |page, triggers| {
                let items = page["usage_triggers"].as_array().into_iter().flatten();
                triggers.extend(items.filter_map(trigger));
            },
        )
        .await
    }

    /// Creates `want` on `admin`'s account; its SID.
    pub async fn create_usage_trigger(
        &self,
        admin: &TwilioCredential,
        want: &NewTrigger,
    ) -> Result<String, TwilioError> {
        let url = Self::url(
            &self.bases().api_base,
            &Self::usage_path(admin, "Triggers.json"),
        );
        let value = want.trigger_value.to_string();
        let form = [
            ("FriendlyName", want.friendly_name.as_str()),
            ("UsageCategory", want.usage_category.as_str()),
            ("TriggerValue", value.as_str()),
            ("TriggerBy", "count"),
            ("Recurring", "daily"),
            ("CallbackMethod", "POST"),
            ("CallbackUrl", want.callback_url.as_str()),
        ];
        let action = "usage trigger create";
        let answer = self
            .send(action, admin, Retry::OnlyUnsent, |http| {
                http.post(&url).form(&form)
            })
            .await?;
        answer.0["sid"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| TwilioError::Malformed {
                action: action.into(),
                detail: "the answer has no `sid`".into(),
            })
    }

    /// Deletes Usage Trigger `sid`. Already gone is success.
    pub async fn delete_usage_trigger(
        &self,
        admin: &TwilioCredential,
        sid: &str,
    ) -> Result<(), TwilioError> {
        let url = Self::url(
            &self.bases().api_base,
            &Self::usage_path(admin, &format!("Triggers/{sid}.json")),
        );
        match self
            .send("usage trigger delete", admin, Retry::Idempotent, |http| {
                http.delete(&url)
            })
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_reads_strings_and_numbers_and_a_missing_category_is_zero() {
        let answer = serde_json::json!({"usage_records": [
            {"category": "sms", "count": "12", "usage": "14", "price": 0.95,
             "price_unit": "usd", "start_date": "2026-12-04"},
            {"category": "calls", "count": "3", "usage": "7.5", "price": null}
        ]});
        let sms = usage_today(&answer, "sms").unwrap();
        assert_eq!((sms.count, sms.usage, sms.price), (12.0, 14.0, 0.95));
        assert_eq!(sms.day.as_deref(), Some("2026-12-04"));
        let calls = usage_today(&answer, "calls").unwrap();
        assert_eq!((calls.count, calls.usage, calls.price), (3.0, 7.5, 0.0));
        assert_eq!(usage_today(&answer, "mms").unwrap().count, 0.0);
        let bad = serde_json::json!({"usage_records": [{"category": "sms", "count": "many"}]});
        assert!(usage_today(&bad, "sms").unwrap_err().contains("`count`"));
        assert!(usage_today(&serde_json::json!({}), "sms").is_err());
    }
}
