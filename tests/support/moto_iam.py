#!/usr/bin/env python3
"""IAM for moto_server started with INITIAL_NO_AUTH_ACTION_COUNT=3: makes an
admin user and a `credbroker` user that may read secrets, and prints their
access keys as JSON. The first three calls below are the unauthenticated
ones; everything after them is checked against IAM, as on AWS.

  moto_iam.py ENDPOINT setup            -> {"admin": {...}, "credbroker": {...}}
  moto_iam.py ENDPOINT deny KEY SECRET  -> the admin (KEY/SECRET) denies credbroker everything
"""
import json
import sys

import boto3

endpoint, action = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=endpoint, region_name="us-east-1")

READ = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow",
    "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
    "Resource": "*"}]}
DENY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Deny", "Action": "secretsmanager:*", "Resource": "*"}]}
ADMIN = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Action": "*", "Resource": "*"}]}

if action == "setup":
    iam = boto3.client("iam", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", **kw)
    iam.create_user(UserName="admin")                                        # 1
    iam.put_user_policy(UserName="admin", PolicyName="all",                 # 2
                        PolicyDocument=json.dumps(ADMIN))
    admin = iam.create_access_key(UserName="admin")["AccessKey"]            # 3
    iam = boto3.client("iam", aws_access_key_id=admin["AccessKeyId"],
                       aws_secret_access_key=admin["SecretAccessKey"], **kw)
    iam.create_user(UserName="credbroker")
    iam.put_user_policy(UserName="credbroker", PolicyName="read", PolicyDocument=json.dumps(READ))
    user = iam.create_access_key(UserName="credbroker")["AccessKey"]
    print(json.dumps({
        "admin": [admin["AccessKeyId"], admin["SecretAccessKey"]],
        "credbroker": [user["AccessKeyId"], user["SecretAccessKey"]],
    }))
elif action == "deny":
    iam = boto3.client("iam", aws_access_key_id=sys.argv[3], aws_secret_access_key=sys.argv[4], **kw)
    iam.put_user_policy(UserName="credbroker", PolicyName="deny", PolicyDocument=json.dumps(DENY))
else:
    sys.exit(f"unknown action {action}")
