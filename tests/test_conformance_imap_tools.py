"""Conformance with imap_tools' expectations for its own test mails.

Expectations transcribed from ikvk/imap_tools tests/messages_data/**/*.py (Apache-2.0):
subject, From, To, Cc, Date, the start of the text/plain body, whether there is an HTML
body, and attachment names. The mails are read from ../shared/corpus/imap_tools, never
copied here. 81 of the 113 mails are transcribed so far (every RFC 2822 example, the
charset, plain-text and most header-error sets); CONFORMANCE.md says which are not.

Comparison rules: addresses are compared case-insensitively, in order; subjects and text
whitespace-insensitively (buzón folds header whitespace); `text` is scored only where
imap_tools has a text/plain body, and matches when ours starts with the expected text;
a date of None is imap_tools' "could not parse" (1900-01-01); "naive:" dates had no zone.
An attachment name of None is one imap_tools leaves empty and matches any name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from parsers import ParsedMessage, parse
from tests.test_conformance_tables import Scoreboard, normalise_text

FOLDER = "imap_tools"


class Expected(NamedTuple):
    subject: str
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    date: str | None
    text: str  # the start of the text/plain body, whitespace-normalised; "" when none
    html: bool
    attachments: tuple[str | None, ...] | None  # None: not transcribed


HELLO = 'This is a message just to say hello. So, "Hello".'
JOHN = ("Saying Hello", "jdoe@machine.example", ("mary@example.net",), ())
KOREAN = "대부분의 마찬가지로, 우리는 하나님을 믿습니다. 제 이름은 Jamis입니다."
DAILY = "Daily Data: D09.ZPH (Averaged data) Email generated: 10/11/2020 00:04:03.765"
RABEA = ("jessica.schmidt@uni.de", "я你rabea.bartölke@uni.de")
PLAIN = "Plain email. Hope it works well! Mikel"
OUTLOOK_TEST = (
    "Testing outlook",
    "email_test@me.nowhere",
    ("mikel@me.nowhere",),
    (),
    "2007-10-21T19:38:13+10:00",
    "Hello This is an outlook test So there. Me.",
    True,
    (),
)
BELL = ("", "xxx@xxxx.xxx", ("xxxxxxxxxxx@xxxx.xxxx.xxx",), (), "2005-05-10T15:27:03-05:00")
BELL_TEXT = (
    "Test test. Hi. Waving. m " + "-" * 64 + " Sent via Bell Mobility's Text Messaging service."
)

EXPECTED: dict[str, Expected] = {
    "address_quoted_newlines.eml": Expected(
        "Daily",
        "status@sender.com",
        ("my.name@domain.com", "other.name@domain.com"),
        (
            "third.name@domain.com",
            "quoted-mailing-list-one@domain.com",
            "quoted-mailing-list-two@domain.com",
        ),
        "2020-11-01T14:49:07-08:00",
        DAILY,
        False,
        ("D09.ZPH.txt",),
    ),
    "att_name_in_content_type.eml": Expected(
        "Daily Data: D09.ZPH (Averaged data)",
        "status@sender.com",
        ("data@email.com",),
        (),
        "2020-11-09T14:49:07-08:00",
        DAILY,
        False,
        ("D09.ZPH.txt",),
    ),
    "attachment_2_base64.eml": Expected(
        "eml attachments",
        "kaukinvk@yandex.ru",
        ("imap.tools@ya.ru",),
        (),
        "2019-05-01T12:20:29+05:00",
        "UmVjZWl2ZWQ6IGZyb20gbXhmcm9udDJnLm1haWwueWFuZGV4Lm5ldCAoWzEyNy4wLjAuMV0pDQoJ",
        True,
        None,
    ),
    "attachment_7bit.eml": Expected(
        "статус",
        "i.kor@company.ru",
        RABEA,
        (),
        "2017-10-12T09:41:56+05:00",
        "",
        True,
        ("Contract 25 04 2020.docx",),
    ),
    "attachment_8bit.eml": Expected(
        "S19 IZM A7-342",
        "k1@yandex.ru",
        ("rasp@wat.aero",),
        ("aa@com.ru", "mm@com.ru"),
        "2019-02-07T13:18:20+05:00",
        "SCR / S19 07FEB wat -- отдел расписания тел. (343) 072-00-00 (вн.18-59)",
        True,
        ("Message01.eml",),
    ),
    "attachment_inline1.eml": Expected(
        "Mail.Ru – больше, чем почта. Познакомьтесь с проектами Mail.Ru Group",
        "welcome@corp.mail.ru",
        ("imap.tools@mail.ru",),
        (),
        None,
        "Здравствуйте",
        True,
        ("blank.png", "sm-ok.png", "logo.png"),
    ),
    "attachment_inline2.eml": Expected(
        "test",
        "samgentlemankaka@foxmail.com",
        ("qmebi@mfk.app",),
        (),
        "2020-10-21T11:34:09+08:00",
        "",
        True,
        ("F76361FC@E3C5215F.31AC8F5F.png.jpg",),
    ),
    "base.eml": Expected(
        "Соберите всю почту в этот ящик", "hello@yandex.ru", (), (), None, "", True, None
    ),
    "double_fields.eml": Expected(
        "double_fields",
        "kaukinvk@yandex.ru",
        ("aa@aa.ru", "bb@aa.ru"),
        ("cc@aa.ru", "dd@aa.ru"),
        "naive:2019-05-01T12:20:00",
        "",
        True,
        (),
    ),
    "forwarded_message.eml": Expected(
        "статус",
        "i.kor@company.ru",
        RABEA,
        (),
        "2017-10-12T09:41:56+05:00",
        "Новый заказ №28922 http://group.company.ru/ru/order/28922/process/ Создал:",
        True,
        (None,),
    ),
    "attachment_emails/attachment_message_rfc822.eml": Expected(
        "testing",
        "foo@example.com",
        ("blah@example.com",),
        (),
        "2005-06-06T22:21:22+02:00",
        "This is the first part.",
        False,
        ("ForwardedMessage.eml", "broken.pdf"),
    ),
    "rfc2822/example01.eml": Expected(*JOHN, "1997-11-21T09:55:06-06:00", HELLO, False, ()),
    "rfc2822/example02.eml": Expected(*JOHN, "1997-11-21T09:55:06-06:00", HELLO, False, ()),
    "rfc2822/example03.eml": Expected(
        "",
        "john.q.public@example.com",
        ("mary@x.test", "jdoe@example.org", "one@y.test"),
        ("boss@nil.test", "sysservices@example.net"),
        "2003-07-01T10:52:37+02:00",
        "Hi everyone.",
        False,
        (),
    ),
    "rfc2822/example04.eml": Expected(
        "",
        "pete@silly.example",
        ("c@a.test", "joe@where.test", "jdoe@one.test"),
        (),
        "1969-02-13T23:32:54-03:30",
        "Testing.",
        False,
        (),
    ),
    "rfc2822/example05.eml": Expected(*JOHN, "1997-11-21T09:55:06-06:00", HELLO, False, ()),
    "rfc2822/example06.eml": Expected(
        "Re: Saying Hello",
        "mary@example.net",
        ("jdoe@machine.example",),
        (),
        "1997-11-21T10:01:10-06:00",
        "This is a reply to your hello.",
        False,
        (),
    ),
    "rfc2822/example07.eml": Expected(
        "Re: Saying Hello",
        "jdoe@machine.example",
        ("smith@home.example",),
        (),
        "1997-11-21T11:00:00-06:00",
        "This is a reply to your reply.",
        False,
        (),
    ),
    "rfc2822/example08.eml": Expected(*JOHN, "1997-11-21T09:55:06-06:00", HELLO, False, ()),
    "rfc2822/example09.eml": Expected(*JOHN, "1997-11-21T09:55:06-06:00", HELLO, False, ()),
    "rfc2822/example10.eml": Expected(
        "",
        "pete@silly.test",
        ("c@public.example", "joe@example.org", "jdoe@one.test"),
        (),
        "1969-02-13T23:32:00-03:30",
        "Testing.",
        False,
        (),
    ),
    "rfc2822/example11.eml": Expected(
        "",
        "john.q.public@example.com",
        ("mary@example.net", "jdoe@test.example"),
        (),
        "2003-07-01T10:52:37+02:00",
        "Hi everyone.",
        False,
        (),
    ),
    "rfc2822/example12.eml": Expected(*JOHN, "1997-11-21T09:55:06+00:00", HELLO, False, ()),
    "rfc2822/example13.eml": Expected(
        "",
        "",
        (),
        (),
        None,
        "To : Mary Smith __ <mary@example.net> Subject : Saying Hello",
        False,
        (),
    ),
    "rfc2822/example14.eml": Expected(
        "Re: TESTテストテスト",
        "atsushi@example.com",
        ("rudeboyjet@gmail.com",),
        (),
        "2011-08-19T10:47:17+09:00",
        "Hello",
        False,
        (),
    ),
    "multi_charset/japanese.eml": Expected(
        "まみむめも",
        "raasdnil@gmail.com",
        ("raasdnil@gmail.com",),
        (),
        None,
        "かきくえこ -- http://lindsaar.net/ Rails, RSpec and Life blog....",
        False,
        (),
    ),
    "multi_charset/japanese_iso_2022.eml": Expected(
        "まみむめも",
        "raasdnil@gmail.com",
        ("raasdnil@gmail.com",),
        (),
        None,
        "すみません。",
        False,
        (),
    ),
    "multi_charset/japanese_shift_jis.eml": Expected(
        "test",
        "xxxxxxx@docomo.ne.jp",
        ("unknown@example.com",),
        (),
        "2014-05-28T17:18:19+09:00",
        "あいうえお このメールはテスト用のメールです。 今後ともよろしくお願い申し上げます！",
        False,
        (),
    ),
    "multi_charset/ks_c_5601-1987.eml": Expected(
        "test",
        "from@example.com",
        ("unknown@example.com",),
        (),
        "2014-05-28T17:18:19+09:00",
        "스티해",
        False,
        (),
    ),
    "plain_emails/basic_email.eml": Expected(
        "Testing 123",
        "test@lindsaar.net",
        ("raasdnil@gmail.com",),
        (),
        "2008-11-22T15:04:59+11:00",
        PLAIN,
        False,
        (),
    ),
    "plain_emails/raw_email_trailing_dot.eml": Expected(
        "[skynet-help][60666] How are intermediate files handled in SkyNet?",
        "noreply@rubyforge.org",
        ("noreply@rubyforge.org",),
        (),
        "2008-09-22T15:06:28-04:00",
        "Testing, testing, 123.",
        False,
        (),
    ),
    "plain_emails/raw_email_with_at_display_name.eml": Expected(
        "Testing 123",
        "test@lindsaar.net",
        ("smith@gmail.com", "mikel@lindsaar", "raasdnil@gmail.com", "tom@gmail.com"),
        (),
        "2008-11-22T15:04:59+11:00",
        PLAIN,
        False,
        (),
    ),
    "plain_emails/raw_email_double_at_in_header.eml": Expected(
        "NOTE: 한국말로 하는 것",
        "jamis@37signals.com",
        ("willard15georgina@jamis.backpackit.com",),
        (),
        "2005-05-02T16:07:05-06:00",
        KOREAN,
        False,
        (),
    ),
    "plain_emails/raw_email_with_partially_quoted_subject.eml": Expected(
        'Re: Test: "漢字" mid "漢字" tail',
        "jamis@37signals.com",
        ("jamis@37signals.com",),
        (),
        "2005-05-02T16:07:05-06:00",
        KOREAN,
        False,
        (),
    ),
    "plain_emails/raw_email_quoted_with_0d0a.eml": Expected(
        "testing",
        "foo@example.com",
        ("blah@example.com",),
        (),
        "2005-06-06T22:21:22+02:00",
        "A fax has arrived from remote ID ''. ----------------------------------------------"
        "-------------- Time: 3/9/2006 3:50:52 PM",
        False,
        (),
    ),
    "plain_emails/basic_email_lf.eml": Expected(
        "Testing 123",
        "test@lindsaar.net",
        ("raasdnil@gmail.com",),
        (),
        "2008-11-22T15:04:59+11:00",
        PLAIN,
        False,
        (),
    ),
    "plain_emails/mix_caps_content_type.eml": Expected(
        "undef method parameter bug",
        "big bug bb@bug.com",
        ("rubymail@ruby-lang.org",),
        (),
        "2010-02-19T10:08:29+03:00",
        "foo bar",
        False,
        (),
    ),
    "plain_emails/raw_email.eml": Expected(
        "NOTE: 한국말로 하는 것",
        "jamis@37signals.com",
        ("willard15georgina@jamis.backpackit.com",),
        (),
        "2005-05-02T16:07:05-06:00",
        KOREAN,
        False,
        (),
    ),
    "plain_emails/raw_email10.eml": Expected(
        *BELL, f"{BELL_TEXT} Envoyé par le service", False, ()
    ),
    "plain_emails/raw_email5.eml": Expected(*BELL, f"{BELL_TEXT} Envoyé par le service", False, ()),
    "plain_emails/raw_email6.eml": Expected(*BELL, f"{BELL_TEXT} Envoy par le service", False, ()),
    "plain_emails/raw_email_bad_time.eml": Expected(
        "[0]: XXXXXXX XXXXX XXXXX !",
        "yusuf75thu@auracom.net",
        ("abcdefg@aaaaaaaaa.net",),
        (),
        "3609-06-30T15:33:50+06:00",
        "Filter2: This message has been scanned for viruses and dangerous content by MailScanner",
        True,
        (),
    ),
    "plain_emails/raw_email_incorrect_header.eml": Expected(
        "", "", (), (), None, "quite Delivered-To: xxx@xxx.xxx", False, ()
    ),
    "plain_emails/raw_email_reply.eml": Expected(
        "Re: Test reply email",
        "xxxxxxxx@xxx.org",
        ("mikel@xxxx.net",),
        (),
        "2007-11-18T19:56:07+11:00",
        "Message body",
        False,
        (),
    ),
    "plain_emails/raw_email_simple.eml": Expected(
        "Testing outlook",
        "mikel@nowhere.com",
        ("mikel@somewhere.com",),
        (),
        "2007-10-21T19:38:13+10:00",
        "Hello Mikel",
        False,
        (),
    ),
    "plain_emails/raw_email_string_in_date_field.eml": Expected(
        "NOTE: 한국말로 하는 것",
        "mikel@me.com",
        ("bob@bob.com",),
        (),
        "2008-09-20T20:04:30+03:00",
        KOREAN,
        False,
        (),
    ),
    "plain_emails/raw_email_with_bad_date.eml": Expected(
        "Microsoft Vlsta & Office2007, Just released for 79$ Save 1599.95$ 0ff Retai|",
        "subventive@vodtravel.com",
        ("sydney@xxxxxxxx.xxx",),
        (),
        None,
        "hotnewsoft . com",
        False,
        (),
    ),
    "rfc6532/utf8_headers.eml": Expected(
        "Säying Hello",
        "jdöe@mächine.example",
        ("märy@exämple.net",),
        (),
        None,
        "body",
        False,
        (),
    ),
    "error_emails/bad_subject.eml": Expected(
        "MySurvey.com: You have a survey waiting! 91123105",
        "carol@mysurvey.com",
        ("someone@aol.com",),
        (),
        "2010-12-15T12:21:20-05:00",
        "You have a survey waiting! To take the survey:",
        True,
        (),
    ),
    "error_emails/cant_parse_from.eml": Expected(
        "Meet the new MacBook Pro family. Now includes 13-inch.",
        "news@insideapple.apple.com",
        ("karl.baum@gmail.com",),
        (),
        "2009-06-11T23:25:02-07:00",
        "From one solid piece of aluminum comes a MacBook Pro that's thin and light",
        True,
        (),
    ),
    "error_emails/invalid_subject_characters.eml": Expected(
        "Formao FrenetikPolis: Mega Campanha Final Vero | Cursos de Setembro",
        "info@formacaofrenetik.info",
        ("martin@internet.ao", "iris@internet.ao", "support@maxnet.ao"),
        (),
        None,
        "TEST",
        False,
        (),
    ),
    "error_emails/trademark_character_in_subject.eml": Expected(
        "GA.comô has a lead for you",
        "j@yahoo-example.com",
        ("c@ra-example.com", "e-r-w-a-4462@app.ar.com", "leads@ga-example.com"),
        (),
        "naive:2010-10-12T16:21:05",
        "Body Text - not important",
        False,
        (),
    ),
    "error_emails/weird_to_header.eml": Expected(
        "",
        "anonymous@i.tp.host",
        ("user-example@aol.com", "e-s-a-s-2200@app.ar.com"),
        (),
        "2010-10-14T23:25:06-04:00",
        "CONTACT: COMMENT: PAGE THEY WERE ON:",
        False,
        (),
    ),
    "error_emails/new_line_in_to_header.eml": Expected(
        "[Online Lead] Online Lead #1111111",
        "l@gcn-example.com",
        (
            "leads@sg.dc.com",
            "sag@leads.gs.ry.com",
            "sn@example-hotmail.com",
            "e-s-a-g-8718@app.ar.com",
            "jp@t-exmaple.com",
            "cc@c-l-example.com",
        ),
        (),
        "2010-10-13T07:53:04-07:00",
        '<?xml version="1.0" encoding="UTF-8"?> <?ADF version="1.0"?><adf>',
        False,
        (),
    ),
    "error_emails/empty_group_lists.eml": Expected(
        "Western Union Swift Money Transfer",
        "ceciledwards@sbcglobal.net",
        (),
        (),
        "2009-12-03T10:50:22-08:00",
        "Attention Beneficiary: This is to officially informed you",
        True,
        (),
    ),
    "error_emails/bad_date_header2.eml": Expected(
        "40% OFF holiday patterns and fabric!",
        "enews@free-quilting.com",
        ("someone@live.com",),
        (),
        None,
        "",
        False,
        (),
    ),
    "error_emails/content_transfer_encoding_empty.eml": Expected(
        "4d8119¡@(¤j¸ÉªwÄÑ±M½æ) ¤j®a»¡\xad^»y ¨C¤éÅ¥MP3 (2004¦~6¤ë¥÷) ÁcÅé¤¤¤å¥úºÐª© "
        "(\xad^»y±Ð¾Ç)¡@8afb90",
        "3712f2@msa.hinet.net",
        ("brucegemini@yahoo.com.tw",),
        (),
        None,
        "",
        True,
        (),
    ),
    "error_emails/content_transfer_encoding_plain.eml": Expected(
        "bookkeeping Get in on IGTS asap.",
        "baocqccyw@hq.lindsayelec.com",
        ("em-ca-bruceg@em.ca",),
        (),
        "2005-03-27T19:11:59-06:00",
        "acidness Exciting Easter Investor Alert Ticker:IGTS Current:0.01",
        False,
        (),
    ),
    "error_emails/content_transfer_encoding_qp_with_space.eml": Expected(
        "Low or High Blood Pressure? We can help.",
        "fyouizjnp@swissonline.ch",
        ("bait-passover@em.ca",),
        (),
        "2004-11-07T18:23:56-03:00",
        "If you're in need of a good RX site for online purchases, we are your answer.",
        True,
        (),
    ),
    "error_emails/content_transfer_encoding_with_semi_colon.eml": Expected(
        "Attention",
        "nsukijamq@morozstudio.tk",
        ("cvs@bruce-guenter.dyndns.org",),
        (),
        "2005-06-29T22:57:10-06:00",
        "Dear Homeowner, You have been pre-approved for a $402,000 Home Loan at a 3.45% Fixed",
        True,
        (),
    ),
    "error_emails/empty_in_reply_to.eml": Expected(
        "illegal copy of our patient education software",
        "ak@g.com",
        ("abuser@r.ru",),
        (),
        "2009-09-19T19:49:36+04:00",
        "",
        False,
        (),
    ),
    "error_emails/header_fields_with_empty_values.eml": Expected(
        "Testmail",
        "jorn@prikkprikkprikk.no",
        ("aftest@adfontesmedier.no",),
        (),
        "2009-10-30T20:07:42+01:00",
        "-- Jørn Støylen -- http://www.prikkprikkprikk.no",
        False,
        (),
    ),
    "error_emails/missing_body.eml": Expected(
        "REDACTED",
        "redacted@attglobal.net",
        ("", "@mailman.enron.com"),
        (),
        "2001-11-27T15:02:35-08:00",
        "",
        False,
        (),
    ),
    "error_emails/multiple_references_with_one_invalid.eml": Expected(
        "Redacted", "redacted@flashmail.net", ("redacted@enron.com",), (), None, "foo", True, ()
    ),
    "error_emails/must_supply_encoding.eml": Expected(
        "Impress your clients with a business phone\ufffd\ufffd\ufffd",
        "info@here2there-travelers-msgs.net",
        ("anyone@yahoo.com",),
        (),
        "2010-11-14T17:41:44+00:00",
        "",
        False,
        (),
    ),
    "error_emails/content_transfer_encoding_7-bit.eml": Expected(
        "Discover(R) Card News Online - January 2002",
        "discovercard_newsflash@discover.qrs1.net",
        ("emclaug@enron.com",),
        (),
        "2002-01-09T19:47:50-07:00",
        "DISCOVER\u00c3\x86 CARD <http://discover.qrs1.net/s/r?l=5893&m=101BN3c3ce68600277550d>",
        True,
        None,
    ),
    "error_emails/content_transfer_encoding_spam.eml": Expected(
        "",
        "shechem@poetrix.com",
        ("vladi.pimenov@enron.com",),
        (),
        "2001-08-19T06:31:03-07:00",
        "middagh oldusercompare othermachine one-twist natascha mz05 ntsoft netvladi.Pimenovr",
        False,
        (),
    ),
    "error_emails/content_transfer_encoding_text-html.eml": Expected(
        "Re: We will help you refinance your home.",
        "abhijit.862153drinnan@datavalet.com",
        ("cvs@bruce-guenter.dyndns.org",),
        ("rait@bruce-guenter.dyndns.org",),
        "2005-05-06T15:55:01+04:00",
        "",
        True,
        (),
    ),
    "error_emails/content_transfer_encoding_with_8bits.eml": Expected(
        "The Original Advantage #e13011",
        "announcements@provantage.com",
        ("jeff_dasovich@enron.com",),
        (),
        "2001-12-04T17:11:25-04:59",
        "",
        True,
        None,
    ),
    "error_emails/missing_content_disposition.eml": Expected(
        "Redacted",
        "redacted@example.com",
        ("redacted@example.com",),
        (),
        "2002-01-22T14:35:28+00:00",
        "",
        False,
        (),
    ),
    "error_emails/multiple_content_types.eml": Expected(
        "Redacted", "redacted@flashmail.net", ("redacted@enron.com",), (), None, "foo", True, ()
    ),
    "multipart_report_emails/report_422.eml": Expected(
        "Warning: could not send message for past 8 hours",
        "mailer-daemon@tppppp.com.au",
        ("jennifer@sss.sssssss.net.au",),
        (),
        "2008-01-17T03:40:52+11:00",
        "********************************************** ** THIS IS A WARNING MESSAGE ONLY **",
        False,
        (),
    ),
    "multipart_report_emails/report_530.eml": Expected(
        "Returned mail: see transcript for details",
        "mailer-daemon@tttttt.com.au",
        ("mikel@sssss.net",),
        (),
        "2007-12-24T10:03:53+11:00",
        "The original message was received at Mon, 24 Dec 2007 10:03:47 +1100",
        False,
        (),
    ),
    "mime_emails/two_from_in_message.eml": Expected(
        "Sending messages include last little bit",
        "tester1@test.com",
        ("tester2@test.com",),
        (),
        "2009-12-02T22:39:33+13:00",
        "When sending email: * From Hotmail you get the ads as well.",
        True,
        (),
    ),
    "mime_emails/sig_only_email.eml": Expected(
        "Re: Testing multipart/signed",
        "test@test.lindsaar.net",
        ("mikel@test.lindsaar.net",),
        (),
        "2007-06-04T15:01:31-07:00",
        "This is random text, not what has been signed below, ie, this sig",
        False,
        ("signature.asc",),
    ),
    "mime_emails/raw_email_with_illegal_boundary.eml": Expected(*OUTLOOK_TEST),
    "mime_emails/raw_email_with_quoted_illegal_boundary.eml": Expected(*OUTLOOK_TEST),
    "mime_emails/email_with_similar_boundaries.eml": Expected(
        "Xxxxxx",
        "xxxxxx@xxxxxxxx.xxx",
        ("xxxxxxx@xxxxxxxxxxx.xxx",),
        (),
        "2012-04-06T01:01:01+00:00",
        "Test",
        True,
        ("LOGO.png",),
    ),
    "mime_emails/raw_email_with_mimepart_without_content_type.eml": Expected(
        "Warning: could not send message for past 1 day",
        "mailer-daemon@antivirus.uqam.ca",
        ("roor32@gmail.com",),
        (),
        "2006-10-20T04:28:33-04:00",
        "********************************************** ** THIS IS A WARNING MESSAGE ONLY **",
        False,
        (None,),
    ),
    "error_emails/bad_encoded_subject.eml": Expected("TEST", "", (), (), None, "TEST", False, ()),
    "error_emails/bad_date_header.eml": Expected(
        "You may_be Eligible for Legitimate_Cash from_GovAgencies!",
        "infoz@reactive-outpost.com",
        ("someone@yahoo.com",),
        (),
        None,
        "",
        False,
        (),
    ),
}

DSN_PARTS = "a bounce keeps its delivery-status report and returned headers as files"
JUNK_LINE = "one junk line in the header block is dropped, so the headers below it are read"
NESTED = "an attached mail stays whole in its .eml; its body and files are not merged in"
# Where buzón differs from imap_tools on purpose. Each is still counted as a miss.
BY_DESIGN = {
    ("rfc2822/example14.eml", "subject"): (
        "RFC 2047: the space between 'TEST' and an encoded word is kept"
    ),
    ("error_emails/invalid_subject_characters.eml", "subject"): (
        "raw 8-bit letters decoded (Formação, Verão), not dropped"
    ),
    ("attachment_emails/attachment_message_rfc822.eml", "attachments"): NESTED,
    ("attachment_7bit.eml", "html"): NESTED,
    ("forwarded_message.eml", "html"): NESTED,
    ("forwarded_message.eml", "text"): NESTED,
    ("error_emails/missing_body.eml", "to"): (
        "'<Undisclosed-Recipient:@mailman.enron.com;>' holds no mailbox"
    ),
    ("multipart_report_emails/report_422.eml", "attachments"): DSN_PARTS,
    ("multipart_report_emails/report_530.eml", "attachments"): DSN_PARTS,
    ("mime_emails/raw_email_with_mimepart_without_content_type.eml", "attachments"): DSN_PARTS,
    ("error_emails/missing_content_disposition.eml", "attachments"): (
        "an image part with an empty Content-Disposition is kept as a file"
    ),
    ("error_emails/content_transfer_encoding_7-bit.eml", "text"): (
        "valid UTF-8 labelled iso-8859-1 is read as UTF-8 (DISCOVERÆ, not DISCOVERÃ\\x86)"
    ),
    ("plain_emails/raw_email6.eml", "text"): "raw 8-bit letters decoded (Envoyé), not dropped",
    ("plain_emails/mix_caps_content_type.eml", "from"): (
        "'From: Big Bug bb@bug.com' names the mailbox bb@bug.com"
    ),
    **{
        ("plain_emails/raw_email_incorrect_header.eml", field_name): JUNK_LINE
        for field_name in ("subject", "from", "to", "date", "text")
    },
    ("plain_emails/raw_email_with_at_display_name.eml", "to"): (
        "a display name shaped like an address (Mikel@Lindsaar) is not a recipient"
    ),
}

# Measured 2026-12-01 in this suite; see CONFORMANCE.md.
FLOORS = {
    "subject": 0.962,
    "from": 0.975,
    "to": 0.962,
    "cc": 1.0,
    "date": 0.987,
    "text": 0.911,
    "html": 0.975,
    "attachments": 0.935,
}


def _emails(addresses: tuple[object, ...]) -> tuple[str, ...]:
    return tuple(str(getattr(address, "email", "")).lower() for address in addresses)


def _date_ok(parsed: datetime | None, expected: str | None) -> bool:
    if expected is None:
        return parsed is None
    if parsed is None:
        return False
    if expected.startswith("naive:"):
        return parsed.astimezone(UTC).replace(tzinfo=None) == datetime.fromisoformat(
            expected.removeprefix("naive:")
        )
    return parsed == datetime.fromisoformat(expected)


def _attachments_ok(parsed: ParsedMessage, expected: tuple[str | None, ...]) -> bool:
    names = [attachment.filename for attachment in parsed.attachments]
    return len(names) == len(expected) and all(
        want is None or want == got for want, got in zip(expected, names, strict=True)
    )


def _score(board: Scoreboard, name: str, parsed: ParsedMessage, want: Expected) -> None:
    def score(field_name: str, ok: bool) -> None:
        board.score(name, field_name, ok, BY_DESIGN.get((name, field_name)))

    sender = parsed.from_addr.email if parsed.from_addr else ""
    score("subject", normalise_text(parsed.subject) == normalise_text(want.subject))
    score("from", sender == want.sender.lower())
    score("to", _emails(parsed.to) == want.to)
    score("cc", _emails(parsed.cc) == want.cc)
    score("date", _date_ok(parsed.date, want.date))
    if want.text:
        score("text", normalise_text(parsed.text).startswith(normalise_text(want.text)))
    score("html", bool(parsed.html and parsed.html.strip()) == want.html)
    if want.attachments is not None:
        score("attachments", _attachments_ok(parsed, want.attachments))


def test_imap_tools_expectations(corpus: Path) -> None:
    board = Scoreboard("imap_tools: per-field agreement with tests/messages_data")
    for name, expected in EXPECTED.items():
        _score(board, name, parse((corpus / FOLDER / name).read_bytes()), expected)
    board.check(FLOORS)
