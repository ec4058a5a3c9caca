//! Benchmarks of the guardrails engine with every rule on: checking a 2 KB prompt, clean and
//! with personal data to redact; checking a 2 KB answer whole and as a stream of small deltas.
//! The target is under 50 µs per 2 KB prompt.
#![expect(missing_docs, reason = "criterion's macros generate undocumented functions")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_actors::guard::{
    Action, DenyTopic, DetectionAction, Guardrail, GuardrailSettings, InjectionSettings, PiiKind, PiiRule, PromptText,
    Redactions, TextOrigin,
};

/// The system message of the benchmark's prompts.
const SYSTEM: &str = "You are the support assistant of Northwind Traders, a wholesale food distributor. \
Answer in a friendly, concise tone. Use the order history and the product catalogue given in the \
conversation; never invent prices or delivery dates. If the customer asks about refunds, explain the \
30-day policy and offer to open a ticket. Format lists as Markdown bullets and keep answers under 200 words.";

/// The user message of the clean prompt, with `{contact}` where the personal data goes.
const USER_TEMPLATE: &str = "Hi, I'm writing about order NW-2024-118734 placed on 2024-03-14. We ordered 24 cases of \
Chai (product 1, $18.00 per case) and 12 cases of Chang (product 2, $19.00 per case), but only 20 cases of Chai \
arrived on 2024-03-21. The delivery note says version 2.3 of the packing list, reference PL-55817, and the \
driver's handheld showed 18 cases scanned at 09:42. Our warehouse manager checked the pallets twice. {contact} \
Could you tell me whether the remaining 4 cases were shipped separately, and if not, when we can expect them? \
We also noticed the invoice total is $708.00, which matches the full order rather than what we received, so \
we would like a corrected invoice or a credit note for the missing cases. For context, last quarter we had a \
similar issue with order NW-2023-990112 and it was resolved within a week, which we appreciated. Our kitchen \
runs a weekend brunch service and Chai is part of the menu, so we need to plan ahead. If the missing cases \
cannot arrive before Friday, please suggest an alternative tea from the catalogue in a similar price range, \
for example Earl Grey or Darjeeling, with its product number and current stock. Also, please confirm that \
the delivery address on file is still the loading dock at the back of the building, since the front entrance \
is under renovation until the end of April. Thanks a lot for your help, and apologies for the long message; \
we just want to make sure everything is clear for the accounting team at the end of the month.";

/// The contact details of the prompt with personal data.
const CONTACT_WITH_PII: &str = "Please reply to maria.anders@alfki.example or call +49 30 901820 12. \
Refunds go to DE89 3704 0044 0532 0130 00. My tax id is 536-22-1234 and our POS terminal is 10.20.30.40.";

/// The contact details of the clean prompt, of about the same length.
const CONTACT_CLEAN: &str = "Please reply to this thread or call the store during opening hours on weekdays. \
Refunds go to the account on file. Our store number is four and our point of sale terminal is the one by the door.";

/// A guardrail with every rule on.
fn guardrail() -> Guardrail {
    let mut settings = GuardrailSettings::new("bench");
    settings.pii.rules = PiiKind::ALL
        .into_iter()
        .map(|kind| PiiRule { kind, action: if kind == PiiKind::Secret { Action::Block } else { Action::Redact } })
        .collect();
    settings.injection = Some(InjectionSettings::default());
    settings.deny.words =
        ["idiot", "stupid", "damn", "moron", "scam", "lawsuit", "chargeback", "fraud", "kill", "hate"]
            .into_iter()
            .map(String::from)
            .collect();
    settings.deny.words_action = DetectionAction::Log;
    let topic = |name: &str, phrases: &[&str]| DenyTopic {
        name: name.into(),
        phrases: phrases.iter().map(|phrase| (*phrase).to_owned()).collect(),
        action: DetectionAction::Block,
    };
    settings.deny.topics = vec![
        topic("weapons", &["build a bomb", "make a bomb", "nerve agent", "3d printed gun", "untraceable firearm"]),
        topic("drugs", &["synthesize meth", "cook meth", "buy cocaine", "fentanyl recipe"]),
        topic("competitors", &["contoso foods", "fabrikam wholesale", "tailspin traders"]),
    ];
    settings.max_answer_characters = Some(20_000);
    Guardrail::new(settings).unwrap_or_else(|error| panic!("the benchmark guardrail does not build: {error}"))
}

fn prompts(criterion: &mut Criterion) {
    let guardrail = guardrail();
    let clean_user = USER_TEMPLATE.replace("{contact}", CONTACT_CLEAN);
    let pii_user = USER_TEMPLATE.replace("{contact}", CONTACT_WITH_PII);
    let clean = [PromptText::new(TextOrigin::System, SYSTEM), PromptText::new(TextOrigin::User, &clean_user)];
    let with_pii = [PromptText::new(TextOrigin::System, SYSTEM), PromptText::new(TextOrigin::User, &pii_user)];
    let clean_size: usize = clean.iter().map(|text| text.text.len()).sum();
    let pii_size: usize = with_pii.iter().map(|text| text.text.len()).sum();
    let clean_check = guardrail.check_prompt(&clean);
    assert!(clean_check.verdict.fired.is_empty(), "the clean prompt fired {:?}", clean_check.verdict);
    let pii_check = guardrail.check_prompt(&with_pii);
    assert_eq!(pii_check.verdict.action(), Some(Action::Redact), "{:?}", pii_check.verdict);
    assert_eq!(pii_check.redactions.len(), 5, "{:?}", pii_check.redactions);

    let mut group = criterion.benchmark_group("check_prompt");
    group.bench_function(format!("clean_{clean_size}_bytes"), |bencher| {
        bencher.iter(|| guardrail.check_prompt(black_box(&clean)))
    });
    group.bench_function(format!("five_values_redacted_{pii_size}_bytes"), |bencher| {
        bencher.iter(|| guardrail.check_prompt(black_box(&with_pii)))
    });
    group.finish();
}

fn answers(criterion: &mut Criterion) {
    let guardrail = guardrail();
    let pii_user = USER_TEMPLATE.replace("{contact}", CONTACT_WITH_PII);
    let prompt = guardrail.check_prompt(&[PromptText::new(TextOrigin::User, &pii_user)]);
    let answer = format!(
        "{} I will send the corrected invoice to [EMAIL_1] and call you at [PHONE_1] once the credit note is ready.",
        USER_TEMPLATE.replace("{contact}", "")
    );
    let deltas: Vec<&str> = answer.split_inclusive(' ').collect();

    let mut group = criterion.benchmark_group("check_answer");
    group.bench_function(format!("whole_{}_bytes", answer.len()), |bencher| {
        bencher.iter(|| guardrail.check_answer(black_box(&answer), &prompt.redactions).verdict)
    });
    group.bench_function(format!("stream_{}_deltas", deltas.len()), |bencher| {
        bencher.iter(|| {
            let mut guard = guardrail.stream_guard(prompt.redactions.clone());
            let mut forwarded = 0;
            for delta in &deltas {
                forwarded += guard.push(black_box(delta)).forward.len();
            }
            forwarded + guard.finish().forward.len()
        })
    });
    group.bench_function("stream_without_rules", |bencher| {
        let nothing = Guardrail::new(GuardrailSettings::new("nothing")).unwrap_or_else(|error| panic!("{error}"));
        bencher.iter(|| {
            let mut guard = nothing.stream_guard(Redactions::default());
            let mut forwarded = 0;
            for delta in &deltas {
                forwarded += guard.push(black_box(delta)).forward.len();
            }
            forwarded
        })
    });
    group.finish();
}

criterion_group!(benches, prompts, answers);
criterion_main!(benches);
