"""Known-answer vectors of both SMS signatures.

Aliyun: the worked SendSms example of help.aliyun.com/document_detail/56189 ("HTTP 协议及签名",
AccessKeyId ``testId``, secret ``testSecret``) and the RPC signature-mechanism example
(DescribeRegions, secret ``testsecret``).
Tencent: the worked example of cloud.tencent.com/document/api/213/30654 ("签名方法 v3",
CVM DescribeInstances at 1551113065). The document masks SecretKey as 32 ``*``; its published
SecretDate ``da98fb…`` is exactly HMAC-SHA256("TC3" + "*" * 32, "2019-02-25"), so the full
chain is checkable.
"""

from __future__ import annotations

from services.notify.providers import aliyun, tencent

SMS_DOC = {
    "AccessKeyId": "testId",
    "Action": "SendSms",
    "Format": "XML",
    "OutId": "123",
    "PhoneNumbers": "15300000001",
    "RegionId": "cn-hangzhou",
    "SignName": "阿里云短信测试专用",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
    "SignatureVersion": "1.0",
    "TemplateCode": "SMS_71390007",
    "TemplateParam": '{"customer":"test"}',
    "Timestamp": "2017-07-12T02:42:19Z",
    "Version": "2017-05-25",
}


def test_aliyun_send_sms_doc_vector():
    to_sign = aliyun.string_to_sign("GET", SMS_DOC)
    assert to_sign.startswith("GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123")
    assert "SignName%3D%25E9%2598%25BF%25E9%2587%258C" in to_sign
    assert to_sign.endswith("Timestamp%3D2017-07-12T02%253A42%253A19Z%26Version%3D2017-05-25")
    assert aliyun.signature("GET", SMS_DOC, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_aliyun_rpc_doc_vector():
    params = {
        "Format": "XML",
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Version": "2014-05-26",
        "Timestamp": "2016-02-23T12:46:24Z",
    }
    assert aliyun.signature("GET", params, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_aliyun_percent_encoding_rules():
    assert aliyun.percent_encode("a b*~-_./=&+") == "a%20b%2A~-_.%2F%3D%26%2B"
    assert aliyun.percent_encode("派") == "%E6%B4%BE"


DOC_PAYLOAD = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'


def test_tencent_doc_vector():
    canonical = tencent.canonical_request("cvm.tencentcloudapi.com", DOC_PAYLOAD, action="DescribeInstances")
    assert canonical == (
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n"
        "x-tc-action:describeinstances\n\ncontent-type;host;x-tc-action\n"
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    to_sign = tencent.string_to_sign(1551113065, "cvm", canonical)
    assert to_sign == (
        "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
        "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
    )
    secret = "*" * 32
    assert (
        tencent.signing_key(secret, "2019-02-25", "cvm").hex()
        == "b596b923aad85185e2d1f6659d2a062e0a86731226e021e61bfe06f7ed05f5af"
    )
    assert (
        tencent.sign(secret, 1551113065, "cvm", to_sign)
        == "10b1a37a7301a02ca19a647ad722d5e43b4b3cff309d421d85b46093f6ab6c4f"
    )


def test_tencent_date_is_utc_not_local():
    # 1551113065 is 2019-02-26 00:44 in Beijing; the scope must still say 2019-02-25.
    header = tencent.authorization("AKIDtest", "key", 1551113065, "sms.tencentcloudapi.com", b"{}")
    assert header.startswith(
        "TC3-HMAC-SHA256 Credential=AKIDtest/2019-02-25/sms/tc3_request, SignedHeaders=content-type;host, Signature="
    )


def test_tencent_error_codes_classified():
    assert tencent.classify("LimitExceeded.PhoneNumberThirtySecondLimit") == "throttled"
    assert tencent.classify("InvalidParameterValue.IncorrectPhoneNumber") == "invalid_recipient"
    assert tencent.classify("FailedOperation.TemplateIncorrectOrUnapproved") == "template"
    assert tencent.classify("AuthFailure.SignatureFailure") == "signature"
    assert tencent.classify("InternalError.Timeout") == "server"
